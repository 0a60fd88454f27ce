"""Relational databases (any SQLAlchemy URL; PostgreSQL tested) as a dataset source.

A table is read in pages ordered by a unique key (keyset pagination): each page is one short
query in its own connection and transaction, so the source never holds a long-running snapshot
or lock, a dropped connection costs one page (retried on a new connection) and memory stays
at one page, whatever the table's size. Pages become Arrow batches typed by the spec and go to
a Parquet file (`quayside.extract` puts it into landing).

- Full load (the first extraction, a table without a watermark, or when asked): pages by the
  tie-breaker (the primary key by default). The watermark to continue from is the column's
  maximum taken *before* reading, so rows changed while the load runs are read again next time
  rather than missed.
- Incremental: rows past the watermark position `(watermark, tie-breaker…)`, in that order;
  the position of the last row read is the next watermark. Deleted rows and rows whose
  watermark is NULL are not seen: a full load (which closes missing keys of CDC datasets)
  catches up with both.

Table and column names come from the validated spec and are quoted by SQLAlchemy; values are
bound parameters.
"""

from __future__ import annotations

import time
from datetime import date, datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from quayside.extract import ExtractError, Extraction, change_columns, finish, last_extraction, scratch_file
from quayside.ingest import arrow_type
from quayside.lake import Lake
from quayside.specs import DatasetSpec


class Database:
    def __init__(self, url: str, password: str = "", retries: int = 2):
        parsed = sa.make_url(url)
        if password:
            parsed = parsed.set(password=password)
        # A connection per page (no pool): nothing stays open between pages or after a sensor
        # tick, and a connection the server dropped is never reused.
        self.engine = sa.create_engine(parsed, poolclass=sa.pool.NullPool)
        self.retries = retries

    def __repr__(self) -> str:
        return f"Database({self.engine.url!r})"  # SQLAlchemy masks the password

    def _query(self, spec: DatasetSpec, statement: sa.Executable) -> tuple[list[sa.Row], float]:
        """Run one statement in its own short transaction; a lost connection is retried."""
        for attempt in range(self.retries + 1):
            started = time.perf_counter()
            try:
                with self.engine.connect() as conn:
                    rows = conn.execute(statement).fetchall()
                return rows, time.perf_counter() - started
            except sa.exc.OperationalError as exc:
                if attempt == self.retries:
                    reason = str(exc.orig or exc).strip().splitlines()[0]
                    raise ExtractError(f"{spec.key}: reading {spec.source.table.table} failed after "
                                       f"{attempt + 1} attempt(s): {reason}") from None
                time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def probe(self, lake: Lake, spec: DatasetSpec) -> str | None:
        """The newest watermark value past the last extraction, or None if there is nothing new."""
        source = spec.source.table
        last = last_extraction(lake, spec)
        if last is None:
            return "first-load"
        if source.watermark is None or last["watermark"] is None:
            return None  # a full-load-only table: run it on a schedule
        table, _ = _table(spec)
        order = [source.watermark, *_tie_breaker(spec)]
        values = _decode(spec, order, last["watermark"])
        newest = sa.select(sa.func.max(table.c[source.watermark])).where(_after(table, order, values))
        (row,), _ = self._query(spec, newest)
        return None if row[0] is None else f"{last['watermark']}..{_text(row[0])}"

    def extract(self, lake: Lake, spec: DatasetSpec, full_load: bool = False, run_id: str = "") -> Extraction:
        source = spec.source.table
        last = None if full_load else last_extraction(lake, spec)
        full_load = last is None or source.watermark is None or last["watermark"] is None
        table, columns = _table(spec)
        tie = _tie_breaker(spec)
        if full_load:
            order, position = tie, []
        else:
            order = [source.watermark, *tie]
            position = _decode(spec, order, last["watermark"])
        run = Extraction(spec.key, full_load, rows=0, pages=0, started_at=datetime.now(timezone.utc))
        next_watermark = None
        if full_load and source.watermark:
            (row,), seconds = self._query(spec, sa.select(sa.func.max(table.c[source.watermark])))
            next_watermark, run.source_seconds = ([] if row[0] is None else [row[0]]), seconds
        extra = change_columns(spec, full_load)
        schema = pa.schema([pa.field(c.name, arrow_type(c)) for c in spec.columns] + extra)
        with scratch_file(".parquet") as scratch:
            with pq.ParquetWriter(scratch, schema, compression="zstd") as writer:
                while True:
                    query = (sa.select(*[table.c[c] for c in columns]).where(_after(table, order, position))
                             .order_by(*[table.c[c] for c in order]).limit(source.page_rows))
                    rows, seconds = self._query(spec, query)
                    run.source_seconds += seconds
                    run.longest_transaction_seconds = max(run.longest_transaction_seconds, seconds)
                    if not rows:
                        break
                    writer.write_table(_to_arrow(spec, rows, columns, schema, run))
                    run.rows += len(rows)
                    run.pages += 1
                    position = [rows[-1][columns.index(c)] for c in order]
                    if len(rows) < source.page_rows:
                        break
            if not full_load:
                next_watermark = position
            run.watermark = next_watermark
            return finish(lake, spec, run, scratch, run_id)


def _tie_breaker(spec: DatasetSpec) -> list[str]:
    return spec.source.table.tie_breaker or spec.primary_key


def _table(spec: DatasetSpec) -> tuple[sa.TableClause, list[str]]:
    schema, _, name = spec.source.table.table.rpartition(".")
    columns = [c.name for c in spec.columns]
    return sa.table(name, *[sa.column(c) for c in columns], schema=schema or None), columns


def _after(table: sa.TableClause, order: list[str], values: list) -> sa.ColumnElement[bool]:
    """Rows strictly after `values` in `order` (a prefix of it when fewer values are given):
    (a > x) OR (a = x AND b > y) OR …, which every SQL dialect understands."""
    if not values:
        return sa.true()
    terms = []
    for i, value in enumerate(values):
        equal = [table.c[order[j]] == values[j] for j in range(i)]
        terms.append(sa.and_(*equal, table.c[order[i]] > value))
    return sa.or_(*terms)


def _text(value: object) -> str:
    return value.isoformat() if isinstance(value, (datetime, date)) else str(value)


def _decode(spec: DatasetSpec, order: list[str], stored: list) -> list:
    """A stored (JSON) watermark back to values of the columns' types, for bound parameters."""
    parse = {"date": date.fromisoformat, "timestamp": datetime.fromisoformat, "timestamptz": datetime.fromisoformat}
    return [parse.get(spec.column(name).type, lambda v: v)(value) for name, value in zip(order, stored)]


def _to_arrow(spec: DatasetSpec, rows: list[sa.Row], columns: list[str], schema: pa.Schema,
              run: Extraction) -> pa.Table:
    arrays = []
    for name, values in zip(columns, zip(*rows)):
        try:
            arrays.append(pa.array(values, type=schema.field(name).type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise ExtractError(f"{spec.key}: {spec.source.table.table}.{name}: values do not fit the spec's type "
                               f"{spec.column(name).type!r}: {exc}") from None
    # The change columns of a CDC dataset follow the spec's columns.
    arrays += [_change_values(spec, field, rows, columns, run.started_at) for field in list(schema)[len(columns):]]
    return pa.Table.from_arrays(arrays, schema=schema)


def _change_values(spec: DatasetSpec, field: pa.Field, rows: list[sa.Row], columns: list[str],
                   started: datetime) -> pa.Array:
    """`Op` is 'U'; the change timestamp is the row's watermark when that is a time, else the
    extraction's start (UTC, as DMS writes it)."""
    if field.name == spec.cdc.op_column:
        return pa.array(["U"] * len(rows), field.type)
    watermark = spec.source.table.watermark
    if not watermark or spec.column(watermark).type not in ("timestamp", "timestamptz", "date"):
        return pa.array([_utc_naive(started)] * len(rows), field.type)
    i = columns.index(watermark)
    return pa.array([_utc_naive(row[i] or started) for row in rows], field.type)


def _utc_naive(value: date | datetime) -> datetime:
    if not isinstance(value, datetime):
        return datetime.combine(value, datetime.min.time())
    return value.astimezone(timezone.utc).replace(tzinfo=None) if value.tzinfo else value
