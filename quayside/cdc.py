"""Apply AWS DMS change files to a dataset's staged Iceberg tables (plain Python, no Dagster).

Two tables per CDC dataset, in `spec.staged_namespace`, both partitioned like the spec:

- history (`<name>_history`), SCD type 2: one row per version of a key, with the spec and
  lineage columns plus `op`, `valid_from` (= the version's `_cdc_ts`), `valid_to`,
  `is_current` and `_cdc_seq`. A version ends where the next version of its key begins.
  A delete is stored as a version too: the version before it gets `valid_to` = the delete's
  timestamp, and the 'D' row itself has `valid_to` = its own timestamp and
  `is_current` = false, so a deleted key has no current row. The latest non-'D' version has
  `valid_to` NULL and `is_current` true.
- current (`<name>`): one row per primary key (the `is_current` rows of history), spec and
  lineage columns only; deleted keys are absent.

Rules:

- Versions of a key are ordered by the data, `(_cdc_ts, _cdc_seq NULLS FIRST)`, then by op
  (I < U < D) and file name to break ties, never by arrival order: files applied in any order
  give the same tables.
- A version is identified by (primary key, `_cdc_ts`, `_cdc_seq`, op). Rows already in
  history are skipped, so re-applying a file changes nothing and commits nothing. Two rows
  with the same identity (e.g. two updates of a key in one second without a sequence column)
  collapse into one, the one from the last file by name.
- A full load (`full_load=True`) keeps its ops as delivered ('I'). Its rows equal to the
  key's current version in every spec column add no version; changed ones add one.
  Keys current in history but missing from the full load are closed with a synthetic 'D'
  version at the full load's max `_cdc_ts` (lineage columns name the full load), unless
  their current version is newer than the full load (they changed after it was taken).
- Every change needs a `_cdc_ts`; ops must be I, U or D.

How a merge stays cheap (pyiceberg's `upsert` builds a per-row filter and is ~20x slower):
the partition column must be immutable and present in change rows, so all versions of a key
live in one partition. The merge finds the partitions the changes fall into and their data
files (metadata tells which); DuckDB reads those files itself (key columns and positions for
current, whole rows of the matching keys for history), re-chains only the keys that got new
versions, and each table gets one commit that adds the new rows and a position-delete file per
partition naming the rows they replace (merge-on-read, as Athena's MERGE does): no data file
is rewritten, so the time grows with the changes, not with the table. Readers (DuckDB's
`iceberg_scan`, pyiceberg, Athena) skip deleted positions; the nightly maintenance compacts
every partition with deletes back into plain files. Current is derived from the recomputed
history and never read but for the positions of its rows. A full load, an unpartitioned
table, or a change row without a partition value reads the whole table (a 'D' row without
one, as DMS sends for key-only deletes, takes its key's value from the version before it).
Current is committed before history: if the second commit fails, history does not hold the
changes yet, so re-applying them redoes both.

Memory holds the changes and the re-chained keys' versions, never the table: rows stream
through DuckDB. Columns the change rows bring that the tables lack (schema drift) are added to
both tables.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import And, GreaterThanOrEqual, LessThanOrEqual
from pyiceberg.table import FileScanTask, Table

from quayside.iceberg_files import (add_rows_and_deletes, live_rows, partition_field, partition_slices,
                                   partition_values, write_position_deletes, write_slices)
from quayside.lake import Lake
from quayside.specs import LINEAGE_COLUMNS, DatasetSpec

CHANGE_COLUMNS = ("_op", "_cdc_ts", "_cdc_seq")
# Order of versions of one key: by the data, then deterministic tie-breakers.
VERSION_ORDER = "valid_from, _cdc_seq NULLS FIRST, CASE op WHEN 'I' THEN 0 WHEN 'U' THEN 1 ELSE 2 END, _source_file"


@dataclass(frozen=True)
class CdcResult:
    changes_in: int  # change rows received
    changes_applied: int  # rows new to history (re-applied rows are not counted)
    rows_current: int  # rows in the current-state table after the merge
    partitions_touched: int  # Iceberg partitions changed (0 if unpartitioned)
    closed_by_full_load: int  # keys closed because a full load did not contain them


def apply_changes(lake: Lake, spec: DatasetSpec, changes: pa.Table, full_load: bool) -> CdcResult:
    """Merge DMS change rows into the history and current tables of `spec` (see the module doc)."""
    _check_changes(changes)
    base = pa.schema([f for f in changes.schema if f.name not in CHANGE_COLUMNS])
    current = _ensure_table(lake, spec, spec.name, base)
    history = _ensure_table(lake, spec, spec.history_table, _history_schema(base))
    base = _arrow_schema(current)  # the table's columns: earlier drift may have added some
    if changes.num_rows == 0:
        return CdcResult(0, 0, _row_count(current), 0, 0)
    changes = _conform(changes, pa.schema(list(base) + [changes.schema.field(c) for c in CHANGE_COLUMNS]))

    touched = None if full_load else _touched_partitions(history, changes)
    history_files = _data_files(history, changes, touched)
    current_files = _data_files(current, changes, touched)
    con = lake.connect(views=False)  # reads the tables' files, on S3 too
    try:
        merge = _Merge(con, spec, base.names, changes, _arrow_schema(history), history_files, current_files)
        new, closed = merge.new_versions(full_load)
        if new == 0:
            return CdcResult(changes.num_rows, 0, _row_count(current), 0, 0)
        history_rows, history_gone, current_rows, current_gone = merge.delta()
    finally:
        con.close()
    # Current first: history is the record of what was applied (see the module doc).
    _commit(current, current_rows, current_gone, current_files)
    partitions = _commit(history, history_rows, history_gone, history_files)
    return CdcResult(changes.num_rows, new - closed, _row_count(current), partitions if spec.partitioning else 0,
                     closed)


# --- tables ---------------------------------------------------------------------------
def _check_changes(changes: pa.Table) -> None:
    missing = [c for c in CHANGE_COLUMNS + LINEAGE_COLUMNS if c not in changes.column_names]
    if missing:
        raise ValueError(f"change rows lack the columns {missing}")
    if changes["_cdc_ts"].null_count:
        raise ValueError("change rows without a _cdc_ts cannot be ordered (configure the DMS timestamp column)")
    unknown = set(pc.unique(changes["_op"]).to_pylist()) - {"I", "U", "D"}
    if unknown:
        raise ValueError(f"unknown CDC ops {sorted(unknown, key=str)}; expected I, U or D")


def _history_schema(base: pa.Schema) -> pa.Schema:
    return pa.schema(list(base) + [
        pa.field("op", pa.string()),
        pa.field("valid_from", pa.timestamp("us")), pa.field("valid_to", pa.timestamp("us")),
        pa.field("is_current", pa.bool_()), pa.field("_cdc_seq", pa.string())])


def _ensure_table(lake: Lake, spec: DatasetSpec, name: str, schema: pa.Schema) -> Table:
    """Load or create the table; columns the changes bring that it lacks are added (schema drift)."""
    table = lake.load_table(spec.staged_namespace, name)
    if table is None:
        partition = (spec.partitioning.column, spec.partitioning.granularity) if spec.partitioning else None
        return lake.create_table(spec.staged_namespace, name, schema, partition, {
            "comment": spec.description,
            # Compaction rewrites every partition the day's merges touched: zstd level 1 writes
            # ~20% faster than the default level 3 and, measured on the benchmark table, to the
            # same size.
            "write.parquet.compression-level": "1"})
    if set(schema.names) - set(table.schema().column_names):
        with table.update_schema() as update:
            update.union_by_name(schema)
    return table


def _arrow_schema(table: Table) -> pa.Schema:
    return table.schema().as_arrow()


def _conform(data: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast to `schema` by name; columns `data` lacks become nulls."""
    columns = [data[f.name].cast(f.type) if f.name in data.column_names else pa.nulls(data.num_rows, f.type)
               for f in schema]
    return pa.Table.from_arrays(columns, schema=schema)


def _row_count(table: Table) -> int:
    return live_rows(table.current_snapshot())


# --- partitions and files -------------------------------------------------------------
def _touched_partitions(table: Table, changes: pa.Table) -> set[int] | None:
    """Partition values the change rows fall into; None means every partition."""
    partitioning = partition_field(table)
    if partitioning is None:
        return None
    field, column = partitioning
    values = set(pc.unique(partition_values(table, field, changes[column])).to_pylist())
    return None if None in values else values  # a key's partition is unknown: any may hold it


def _data_files(table: Table, changes: pa.Table, touched: set[int] | None) -> list[FileScanTask]:
    """The table's data files in the touched partitions (all if `touched` is None), from metadata."""
    if touched is None:
        return list(table.scan().plan_files())
    field, column = partition_field(table)
    low, high = pc.min_max(changes[column]).values()
    # One range filter prunes manifests cheaply; pyiceberg's planning slows down sharply with
    # a filter per partition (32 OR-ed ranges: 3 s), so exact partitions are picked here.
    tasks = table.scan(row_filter=And(GreaterThanOrEqual(column, low.as_py()), LessThanOrEqual(column, high.as_py())))
    spec_id = table.spec().spec_id
    return [t for t in tasks.plan_files() if t.file.spec_id != spec_id or t.file.partition[0] in touched]


def _commit(table: Table, rows: pa.Table, gone: pa.Table, files: list[FileScanTask]) -> int:
    """Add `rows` and delete the rows at the positions `gone` (file_path, pos) in one commit;
    return the number of partitions changed."""
    slices = partition_slices(table, _conform(rows, _arrow_schema(table)))
    deletes = write_position_deletes(table, gone, [t.file for t in files])
    add_rows_and_deletes(table, write_slices(table, slices), deletes)
    return len({tuple(key.partition) if key else () for key, _ in slices} | {tuple(f.partition) for f in deletes})


# --- the merge, in DuckDB -------------------------------------------------------------
class _Merge:
    """SQL over `chg` (the change rows), `hist` and `cur` (the live rows of the history and
    current files being merged into, read by DuckDB from their Parquet files, with each row's
    `_quayside_file` and `file_row_number`: the position a delete names)."""

    def __init__(self, con: duckdb.DuckDBPyConnection, spec: DatasetSpec, base: list[str], changes: pa.Table,
                 history_schema: pa.Schema, history_files: list[FileScanTask], current_files: list[FileScanTask]):
        self.con, self.spec, self.base = con, spec, base
        self.cols = ", ".join(f'"{c}"' for c in base)
        self.keys = ", ".join(f'"{k}"' for k in spec.primary_key)
        con.register("chg", changes)
        self._live_rows("hist", history_files, history_schema)
        self._live_rows("cur", current_files, pa.schema([history_schema.field(k) for k in spec.primary_key]))

    def _live_rows(self, name: str, files: list[FileScanTask], schema: pa.Schema) -> None:
        """View `name`: the rows of these data files that no delete file of theirs deletes, with
        their positions; table `{name}_files` maps DuckDB's file names to Iceberg paths."""
        local = {t.file.file_path: t.file.file_path.removeprefix("file://") for t in files}  # DuckDB's names
        self.con.register(f"{name}_files", pa.table({"_quayside_file": pa.array(local.values(), pa.string()),
                                                      "file_path": pa.array(local, pa.string())}))
        # The empty table gives every column and type, even where older files lack a column
        # (schema drift): BY NAME fills those with nulls. Quayside never renames a column.
        shape = schema.append(pa.field("_quayside_file", pa.string())).append(pa.field("file_row_number", pa.int64()))
        self.con.register(f"{name}_shape", shape.empty_table())
        if not files:
            self.con.execute(f"CREATE TEMP VIEW {name} AS FROM {name}_shape")
            return
        deletes = sorted({d.file_path for t in files for d in t.delete_files})
        rows = (f"read_parquet({list(local.values())!r}, filename = '_quayside_file', file_row_number = true, "
                f"union_by_name = true, hive_partitioning = false)")
        if deletes:
            rows = (f"(FROM {rows} r ANTI JOIN (SELECT f._quayside_file, d.pos FROM read_parquet({deletes!r}) d "
                    f"JOIN {name}_files f USING (file_path)) d "
                    f"ON r._quayside_file = d._quayside_file AND r.file_row_number = d.pos)")
        self.con.execute(f"CREATE TEMP VIEW {name} AS FROM {name}_shape UNION ALL BY NAME FROM {rows}")

    def _same_key(self, a: str, b: str) -> str:
        # Null-safe, so a null key is still one key everywhere.
        return " AND ".join(f'{a}."{k}" IS NOT DISTINCT FROM {b}."{k}"' for k in self.spec.primary_key)

    def new_versions(self, full_load: bool) -> tuple[int, int]:
        """Build `new` (versions history lacks, synthetic closing deletes included) and `old`
        (the history rows of the keys in this batch); return (rows in `new`, keys closed by a
        full load)."""
        self.con.execute(f"""
            CREATE TEMP TABLE incoming AS
            SELECT {self.cols}, _op AS op, _cdc_ts AS valid_from, _cdc_seq FROM chg
            QUALIFY row_number() OVER (PARTITION BY {self.keys}, _cdc_ts, _cdc_seq, _op
                                       ORDER BY _source_file DESC, _ingested_at DESC) = 1""")
        closed = self._reconcile_full_load() if full_load else 0
        self.con.execute(f"CREATE TEMP TABLE old AS SELECT * FROM hist h SEMI JOIN "
                         f"(SELECT DISTINCT {self.keys} FROM incoming) i ON {self._same_key('h', 'i')}")
        self.con.execute(f"""
            CREATE TEMP TABLE new AS
            SELECT i.* FROM incoming i ANTI JOIN old o
            ON {self._same_key('i', 'o')} AND i.valid_from = o.valid_from AND i.op = o.op
               AND i._cdc_seq IS NOT DISTINCT FROM o._cdc_seq""")
        return self.con.execute("SELECT count(*) FROM new").fetchone()[0], closed

    def _reconcile_full_load(self) -> int:
        """Drop full-load rows equal to the current version; close current keys it lacks."""
        spec_columns = [c.name for c in self.spec.columns if c.name in self.base]
        same_values = " AND ".join(f'i."{c}" IS NOT DISTINCT FROM c."{c}"' for c in spec_columns)
        self.con.execute("CREATE TEMP VIEW open_versions AS SELECT * FROM hist WHERE is_current")
        self.con.execute(f"DELETE FROM incoming WHERE rowid IN (SELECT i.rowid FROM incoming i "
                         f"JOIN open_versions c ON {self._same_key('i', 'c')} AND {same_values})")
        lineage = {c: f"(SELECT max({c}) FROM chg)" for c in LINEAGE_COLUMNS}
        select = ", ".join(lineage.get(c, f'c."{c}"') for c in self.base)
        return self.con.execute(f"""
            INSERT INTO incoming
            SELECT {select}, 'D', (SELECT max(_cdc_ts) FROM chg), NULL FROM open_versions c ANTI JOIN chg f
            ON {self._same_key('c', 'f')}
            WHERE c.valid_from <= (SELECT max(_cdc_ts) FROM chg)""").fetchone()[0]

    def delta(self) -> tuple[pa.Table, pa.Table, pa.Table, pa.Table]:
        """What the merge changes, as (rows to add, positions to delete) of history, then of
        current: the versions of the keys with new versions are re-chained (`valid_to`,
        `is_current`); versions whose chain changed are deleted and added again, new ones added;
        each such key's row in current is replaced by its current version, if any."""
        self.con.execute(f"CREATE TEMP TABLE rekeys AS SELECT DISTINCT {self.keys} FROM new")
        self.con.execute(f"CREATE TEMP TABLE rechain AS SELECT * FROM old o SEMI JOIN rekeys n "
                         f"ON {self._same_key('o', 'n')}")
        part = self.spec.partitioning.column if self.spec.partitioning else None
        # A version without a partition value (a key-only 'D') stays in its key's partition.
        columns = ", ".join(f'coalesce("{c}", last_value("{c}" IGNORE NULLS) OVER w) AS "{c}"'
                            if c == part else f'"{c}"' for c in self.base)
        self.con.execute(f"""
            CREATE TEMP TABLE rechained AS
            SELECT {columns}, op, valid_from,
                   CASE WHEN op = 'D' THEN valid_from ELSE lead(valid_from) OVER w END AS valid_to,
                   op <> 'D' AND lead(valid_from) OVER w IS NULL AS is_current,
                   _cdc_seq
            FROM (SELECT * EXCLUDE (valid_to, is_current, _quayside_file, file_row_number) FROM rechain
                  UNION ALL BY NAME SELECT * FROM new)
            WINDOW w AS (PARTITION BY {self.keys} ORDER BY {VERSION_ORDER})""")
        unchanged = (f"{self._same_key('r', 'o')} AND r.valid_from = o.valid_from AND r.op = o.op "
                     "AND r._cdc_seq IS NOT DISTINCT FROM o._cdc_seq AND r.valid_to IS NOT DISTINCT FROM o.valid_to "
                     "AND r.is_current IS NOT DISTINCT FROM o.is_current")
        # Sorted, so the writer finds each partition's rows in one run.
        order = f'ORDER BY "{part}" NULLS LAST' if part else ""
        history_rows = self.con.execute(f"SELECT r.* FROM rechained r ANTI JOIN rechain o ON {unchanged} "
                                        f"{order}").to_arrow_table()
        history_gone = self._positions(f"SELECT _quayside_file, file_row_number FROM rechain o "
                                       f"ANTI JOIN rechained r ON {unchanged}", "hist")
        current_rows = self.con.execute(f"SELECT {self.cols} FROM rechained WHERE is_current {order}").to_arrow_table()
        current_gone = self._positions(f"SELECT _quayside_file, file_row_number FROM cur c SEMI JOIN rekeys n "
                                       f"ON {self._same_key('c', 'n')}", "cur")
        return history_rows, history_gone, current_rows, current_gone

    def _positions(self, rows: str, name: str) -> pa.Table:
        """(file_path, pos) of the rows, by Iceberg path, in the order a delete file lists them."""
        return self.con.execute(f"SELECT f.file_path, r.file_row_number AS pos FROM ({rows}) r "
                                f"JOIN {name}_files f USING (_quayside_file) ORDER BY ALL").to_arrow_table()
