"""Every path a file takes, top to bottom: landing → raw → staged | quarantine.

1. `land` copies new landing files byte-for-byte into the raw zone
   (`raw/<domain>/<dataset>/ingest_date=YYYY-MM-DD/<file>`), verifies the copy's sha256,
   records a manifest row per file and only then deletes/archives the landing file (per spec).
   A file whose bytes are already in the manifest is recorded as a duplicate, not copied again.
2. `stage` reads a batch of raw files, types and validates every row against the spec in
   DuckDB, writes good rows to the staged Iceberg table (replacing that batch, so re-runs are
   idempotent) and bad rows/files to quarantine with a machine-readable reason. Every file's
   counts go to `staged.loads`, so rows in = rows staged + rows quarantined can be checked.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
import uuid
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import PurePosixPath
from typing import TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression, EqualTo, In
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table

from quayside.delivered import CorruptArchive, StorageUnavailable, compression_of, local_data, open_data
from quayside.iceberg_files import partition_slices, replace_rows_with_files, write_slices
from quayside.lake import CopyMismatch, Lake, Storage
from quayside.raw_tables import register_landed
from quayside.specs import IDENTIFIER, LINEAGE_COLUMNS, Column, DatasetSpec, sql_literal

SYSTEM_NAMESPACE_TABLES = {
    ("raw", "manifest"): pa.schema([
        ("dataset", pa.string()), ("landing_key", pa.string()), ("original_name", pa.string()),
        ("raw_key", pa.string()), ("size_bytes", pa.int64()), ("sha256", pa.string()),
        ("received_at", pa.timestamp("us", tz="UTC")), ("ingested_at", pa.timestamp("us", tz="UTC")),
        ("batch_date", pa.date32()), ("status", pa.string()), ("run_id", pa.string()),
    ]),
    ("raw", "extracts"): pa.schema([  # one row per table/API extraction (quayside.extract)
        ("dataset", pa.string()), ("landing_key", pa.string()), ("full_load", pa.bool_()), ("rows", pa.int64()),
        ("pages", pa.int64()), ("bytes", pa.int64()), ("watermark", pa.string()),
        ("started_at", pa.timestamp("us", tz="UTC")), ("seconds", pa.float64()), ("source_seconds", pa.float64()),
        ("run_id", pa.string()),
    ]),
    ("staged", "loads"): pa.schema([
        ("dataset", pa.string()), ("raw_key", pa.string()), ("batch_date", pa.date32()),
        ("rows_in", pa.int64()), ("rows_staged", pa.int64()), ("rows_quarantined", pa.int64()),
        ("status", pa.string()), ("loaded_at", pa.timestamp("us", tz="UTC")), ("run_id", pa.string()),
    ]),
    ("quarantine", "files"): pa.schema([
        ("dataset", pa.string()), ("raw_key", pa.string()), ("quarantine_key", pa.string()),
        ("batch_date", pa.date32()), ("reason", pa.string()), ("field", pa.string()),
        ("quarantined_at", pa.timestamp("us", tz="UTC")), ("run_id", pa.string()),
    ]),
    ("quarantine", "rows"): pa.schema([
        ("dataset", pa.string()), ("raw_key", pa.string()), ("batch_date", pa.date32()),
        ("row_number", pa.int64()), ("field", pa.string()), ("reason", pa.string()), ("record", pa.string()),
        ("quarantined_at", pa.timestamp("us", tz="UTC")), ("run_id", pa.string()),
    ]),
}

DUCKDB_TYPES = {"string": "VARCHAR", "int": "BIGINT", "float": "DOUBLE", "bool": "BOOLEAN", "date": "DATE",
                "timestamp": "TIMESTAMP", "timestamptz": "TIMESTAMPTZ"}
ARROW_TYPES = {"string": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
               "date": pa.date32(), "timestamp": pa.timestamp("us"), "timestamptz": pa.timestamp("us", tz="UTC")}
# Replacing a batch that was never written before deletes nothing; that is expected, not a warning.
warnings.filterwarnings("ignore", message="Delete operation did not match any records")
# CDC bookkeeping columns carried from DMS files into the merge.
CDC_COLUMNS = pa.schema([("_op", pa.string()), ("_cdc_ts", pa.timestamp("us")), ("_cdc_seq", pa.string())])


class IngestError(Exception):
    """A whole file cannot be staged; `field` names the offending column when there is one."""

    def __init__(self, reason: str, field: str = ""):
        super().__init__(reason)
        self.reason, self.field = reason, field


# --- names and types ------------------------------------------------------------------
def duckdb_type(column: Column) -> str:
    return DUCKDB_TYPES.get(column.type) or column.type.upper()


def arrow_type(column: Column) -> pa.DataType:
    if column.type.startswith("decimal"):
        precision, scale = column.type[8:-1].split(",")
        return pa.decimal128(int(precision), int(scale))
    return ARROW_TYPES[column.type]


def staged_schema(spec: DatasetSpec) -> pa.Schema:
    return pa.schema([pa.field(c.name, arrow_type(c)) for c in spec.columns] + [
        ("_source_file", pa.string()), ("_batch_date", pa.date32()), ("_ingested_at", pa.timestamp("us", tz="UTC"))])


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def retry_commit(action: Callable[[], None], attempts: int = 8) -> None:
    """Iceberg commits are optimistic: parallel runs writing one table retry on conflict."""
    for attempt in range(attempts):
        try:
            return action()
        except CommitFailedException:
            if attempt == attempts - 1:
                raise
            time.sleep(0.05 * 2**attempt)


def system_table(lake: Lake, namespace: str, name: str) -> Table:
    return lake.load_table(namespace, name) or lake.create_table(namespace, name, SYSTEM_NAMESPACE_TABLES[(namespace, name)])


def replace_rows(lake: Lake, namespace: str, name: str, rows: pa.Table | list[dict], where: BooleanExpression) -> None:
    """Replace the rows matching `where` with `rows` in one commit (idempotent re-runs)."""
    schema = SYSTEM_NAMESPACE_TABLES[(namespace, name)]
    data = rows if isinstance(rows, pa.Table) else pa.Table.from_pylist(rows, schema=schema)
    if data.num_rows == 0 and not system_table(lake, namespace, name).scan(
            row_filter=where, selected_fields=(schema.names[0],)).to_arrow().num_rows:
        return  # nothing to replace: a commit would only add an empty snapshot

    def commit() -> None:
        system_table(lake, namespace, name).overwrite(data.cast(schema), overwrite_filter=where)

    retry_commit(commit)


def read_system(lake: Lake, namespace: str, name: str, where: BooleanExpression) -> pa.Table:
    table = lake.load_table(namespace, name)
    if table is None:
        return SYSTEM_NAMESPACE_TABLES[(namespace, name)].empty_table()
    return table.scan(row_filter=where).to_arrow()


# --- 1. landing → raw -----------------------------------------------------------------
@dataclass
class LandReport:
    accepted: list[dict] = field(default_factory=list)
    duplicates: list[dict] = field(default_factory=list)

    @property
    def batch_dates(self) -> list[date]:
        return sorted({row["batch_date"] for row in self.accepted})

    def by_batch(self) -> dict[date, LandReport]:
        """The report split by daily batch."""
        days: dict[date, LandReport] = {}
        for rows, name in ((self.accepted, "accepted"), (self.duplicates, "duplicates")):
            for row in rows:
                getattr(days.setdefault(row["batch_date"], LandReport()), name).append(row)
        return days


def landing_files(lake: Lake, spec: DatasetSpec, start_after: str = "", source: Storage | None = None) -> list:
    """The dataset's files in landing or its connection's `source` (keys under its location whose
    base name matches its pattern)."""
    return [f for f in (source or lake.landing).list(spec.source.location, start_after)
            if spec.source.matches(PurePosixPath(f.key).name)]


def unmatched_landing_files(lake: Lake, specs: list[DatasetSpec]) -> list[str]:
    """Landing files that belong to no dataset: left where they are, reported so someone looks."""
    def claimed(key: str) -> bool:
        return any(key.startswith(s.source.location) and s.source.matches(PurePosixPath(key).name) for s in specs)

    return [f.key for f in lake.landing.list() if not f.key.startswith("_archive/") and not claimed(f.key)]


def batch_date_of(spec: DatasetSpec, file_name: str, received: datetime) -> date:
    """The daily batch a file belongs to: the date in its name if the pattern has one, else arrival day."""
    match = spec.source.matches(file_name)
    if match and match.groupdict().get("date"):
        return date.fromisoformat(match.group("date"))
    return received.astimezone(timezone.utc).date()


LAND_THREADS = 2  # copies in flight: hashing and local I/O release the GIL; remote reads overlap their waits


def land(lake: Lake, spec: DatasetSpec, keys: list[str] | None = None, run_id: str = "",
         batch_dates: set[date] | None = None, source: Storage | None = None) -> LandReport:
    """Copy new files from landing (or the dataset's connection, `source`) into raw; `keys=None`
    takes every matching file, `batch_dates` keeps only files of those daily batches."""
    source = source or lake.landing
    files = landing_files(lake, spec, source=source) if keys is None else [source.info(k) for k in keys]
    if batch_dates is not None:
        files = [f for f in files if f is None or batch_date_of(spec, PurePosixPath(f.key).name, f.modified) in batch_dates]
    manifest = read_system(lake, "raw", "manifest", EqualTo("dataset", spec.key))
    known = dict(zip(manifest["sha256"].to_pylist(), manifest["raw_key"].to_pylist()))
    seen_landing = set(zip(manifest["landing_key"].to_pylist(), manifest["sha256"].to_pylist()))
    report, ingested_at = LandReport(), now_utc()
    files = [info for info in files if info is not None]  # None: listed, then gone before we looked
    for info in files:
        if not spec.source.matches(PurePosixPath(info.key).name) or not info.key.startswith(spec.source.location):
            raise IngestError(f"{spec.key}: landing file {info.key!r} does not belong to this dataset", "source.pattern")
    # One read of the source (a remote server's file is fetched once): copy into a scratch key in
    # raw while hashing, then either place it or drop it as already known. Copies run ahead on
    # worker threads while earlier files are placed and verified.
    copier = ThreadPoolExecutor(max_workers=LAND_THREADS if source.concurrent_reads else 1)
    copies = [copier.submit(_scratch_copy, lake, spec, source, info.key) for info in files]
    taken = 0  # copies whose scratch file the loop below owns
    try:
        for info, copy in zip(files, copies):
            scratch, sha = copy.result()
            taken += 1
            name = PurePosixPath(info.key).name
            consumed = False
            try:
                row = {"dataset": spec.key, "landing_key": info.key, "original_name": name, "size_bytes": info.size,
                       "sha256": sha, "received_at": info.modified, "ingested_at": ingested_at,
                       "batch_date": batch_date_of(spec, name, info.modified), "run_id": run_id}
                if (info.key, sha) in seen_landing:
                    continue  # this very file was ingested before (re-run): nothing to do
                if sha in known:
                    report.duplicates.append(row | {"raw_key": known[sha], "status": "duplicate"})
                else:
                    row["raw_key"] = _place_verified(lake, spec, scratch, info.key, sha, ingested_at.date())
                    consumed = True
                    known[sha] = row["raw_key"]
                    report.accepted.append(row | {"status": "accepted"})
                seen_landing.add((info.key, sha))
            finally:
                if not consumed and lake.raw.info(scratch) is not None:  # a failed placing may have moved it
                    lake.raw.delete(scratch)
    finally:
        copier.shutdown(cancel_futures=True)
        for copy in copies[taken:]:  # copied ahead, never placed: nothing may stay behind
            if not copy.cancelled() and copy.exception() is None:
                lake.raw.delete(copy.result()[0])
    rows = report.accepted + report.duplicates
    register_landed(lake, spec, [r["raw_key"] for r in report.accepted])  # raw_<domain>.<name>; a re-run retries it
    if rows:
        retry_commit(lambda: system_table(lake, "raw", "manifest").append(
            pa.Table.from_pylist(rows, schema=SYSTEM_NAMESPACE_TABLES[("raw", "manifest")])))
    # Only now, with the copies verified and recorded, may source files go.
    for row in rows:
        _after_ingest(source, spec, row["landing_key"])
    return report


def _scratch_copy(lake: Lake, spec: DatasetSpec, source: Storage, key: str) -> tuple[str, str]:
    """Copy a source file to a new scratch key in raw; returns (scratch key, sha256). Where placing
    it will be a rename (a local lake), the copy is read back as it is written, on a second core;
    an object store's copy is checked once placed."""
    scratch = f"_incoming/{uuid.uuid4().hex}"
    try:
        sha, _ = lake.raw.copy_from(source, key, scratch, read_back=lake.raw.moves_by_rename)
    except CopyMismatch:
        raise _mismatch(spec, key) from None
    return scratch, sha


def _place_verified(lake: Lake, spec: DatasetSpec, scratch: str, landing_key: str, sha: str, ingest_day: date) -> str:
    """Move a checked scratch copy to its raw key (never overwriting), checking the placed bytes
    where the move copies them; the scratch copy is gone afterwards either way."""
    name = PurePosixPath(landing_key)
    folder = f"{spec.domain}/{spec.name}/ingest_date={ingest_day.isoformat()}"
    raw_key = f"{folder}/{name.name}"
    if lake.raw.info(raw_key) is not None:
        if lake.raw.sha256(raw_key) == sha:
            lake.raw.delete(scratch)
            return raw_key  # placed by an earlier attempt that failed before recording it
        raw_key = f"{folder}/{name.stem}.{sha[:12]}{name.suffix}"  # raw is immutable: never overwrite
    lake.raw.move(scratch, raw_key)
    if not lake.raw.moves_by_rename and lake.raw.sha256(raw_key) != sha:
        lake.raw.delete(raw_key)  # raw holds only verified copies
        raise _mismatch(spec, landing_key)
    return raw_key


def _mismatch(spec: DatasetSpec, landing_key: str) -> IngestError:
    return IngestError(f"{spec.key}: raw copy of {landing_key!r} does not match its sha256 (source file kept)")


def _after_ingest(source: Storage, spec: DatasetSpec, key: str) -> None:
    if spec.source.after_ingest == "delete":
        source.delete(key)
    elif spec.source.after_ingest == "archive":
        source.move(key, f"_archive/{key}")


# --- 2. raw → typed rows ----------------------------------------------------------------
@dataclass
class FileRead:
    """One raw file, or a chunk of one, read against its spec: good rows, rejected rows, new
    (drifted) columns."""

    raw_key: str
    rows_in: int
    valid: pa.Table
    rejected: list[dict]
    new_columns: list[str] = field(default_factory=list)


T = TypeVar("T")


class MalformedCsv(Exception):
    """pyarrow met a row that is not a well-formed record: read the file again with
    `name_malformed_lines`, so that DuckDB's reader names each malformed line."""


# A CSV or Parquet file is read, validated and written this much (of Arrow data) at a time: memory holds
# 1 + WRITES_IN_FLIGHT chunks' rows (one being read, the others being written) whatever the file's size.
# At 64 MB a 5M-row Parquet extract staged in 1.06 GB, at 32 MB in 0.85 GB, no slower; each chunk is a
# data file of its own until the nightly compaction.
CHUNK_BYTES = 32 << 20
# With one write in flight the reader waited for the writer 1.8 s of S1's 7.6 s stage; with two,
# both cores stay busy (stage 6.3-6.7 s, ~80 MB more memory).
WRITES_IN_FLIGHT = 2
# Chunks smaller than this (small files) are held and written together, up to this size: one more
# chunk's memory, and a burst of one-row files makes a few data files instead of one per file.
HELD_BYTES = CHUNK_BYTES
# pyarrow's streaming reader reads up to 32 blocks ahead of the consumer: small blocks keep that
# buffer at 32 MB (with 64 MB blocks it held 2 GB of a 2 GB file).
CSV_BLOCK_BYTES = 1 << 20
PARQUET_BATCH_ROWS = 64 * 1024  # decoded this many rows at a time


# Failures that are not about the file: they fail the run (a re-run retries), never quarantine it.
NOT_THE_FILES_FAULT = (StorageUnavailable, duckdb.IOException, MemoryError)


def read_raw_file(lake: Lake, spec: DatasetSpec, raw_key: str, con: duckdb.DuckDBPyConnection,
                  name_malformed_lines: bool = False) -> Iterator[FileRead]:
    """Read, type and validate one raw file, a chunk at a time: CSV and Parquet are streamed in
    chunks of `CHUNK_BYTES`; JSON Lines (and CSV read by DuckDB) come as one chunk. A compressed
    file (`.gz`, `.zip`) is read decompressed. Raises IngestError when the whole file is unusable,
    whatever the reader raised, MalformedCsv (possibly after some chunks) when pyarrow finds a
    malformed CSV row; only storage failures (`NOT_THE_FILES_FAULT`) pass as they are."""
    info = lake.raw.info(raw_key)
    if info is None:
        raise IngestError(f"{spec.key}: raw file {raw_key!r} is missing")
    if info.size == 0:
        raise IngestError(f"{spec.key}: {raw_key}: empty file (0 bytes)")
    try:
        yield from _read_raw_file(lake, spec, raw_key, con, name_malformed_lines)
    except (IngestError, MalformedCsv, *NOT_THE_FILES_FAULT):
        raise
    except Exception as exc:  # a reader library's own exception, of any type, is about the file's bytes
        raise IngestError(f"{spec.key}: {raw_key}: cannot read {spec.source.format}: {_described(exc)}") from None


def _read_raw_file(lake: Lake, spec: DatasetSpec, raw_key: str, con: duckdb.DuckDBPyConnection,
                   name_malformed_lines: bool) -> Iterator[FileRead]:
    fmt = spec.source.format
    if fmt == "parquet":
        with _parquet_file(lake.raw, raw_key) as parquet:
            names = parquet.schema_arrow.names
            chunks = _parquet_chunks(parquet)
            yield from _validated_chunks(spec, raw_key, names, _check_columns(spec, raw_key, names), con, chunks)
        return
    if fmt == "csv":
        names = _csv_header(lake.raw, spec, raw_key)
        if not name_malformed_lines:
            chunks = _csv_chunks(lake.raw, spec, raw_key, names)
            yield from _validated_chunks(spec, raw_key, names, _check_columns(spec, raw_key, names), con, chunks)
            return
    with local_data(lake.raw, raw_key, without_bom=fmt == "jsonl") as path:
        rejected = []
        if fmt == "csv":
            source, rejected = _read_csv_duckdb(spec, raw_key, path, names, con)
        else:
            source = _read_jsonl(spec, path, con)
    names = [name for name, *_ in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()]
    yield _validated(spec, raw_key, source, names, _check_columns(spec, raw_key, names), con, None, rejected)


@contextmanager
def _parquet_file(storage: Storage, raw_key: str) -> Iterator[pq.ParquetFile]:
    """The file's Parquet reader (random access: a compressed delivery is decompressed to a
    temporary file first)."""
    if compression_of(raw_key):
        with local_data(storage, raw_key) as path, pq.ParquetFile(path) as parquet:
            yield parquet
    else:
        with open_data(storage, raw_key, random_access=True) as data, pq.ParquetFile(data) as parquet:
            yield parquet


def consume_raw_file(lake: Lake, spec: DatasetSpec, raw_key: str, con: duckdb.DuckDBPyConnection,
                     consume: Callable[[Iterator[FileRead]], T]) -> T:
    """`consume(chunks)` of one file; again from the start with DuckDB's reader if pyarrow finds a
    malformed CSV row (`consume` must undo what it did with the first chunks when it raises)."""
    # closing(): a file abandoned midway releases its chunk before the connection goes
    try:
        with closing(read_raw_file(lake, spec, raw_key, con)) as chunks:
            return consume(chunks)
    except MalformedCsv:
        pass
    with closing(read_raw_file(lake, spec, raw_key, con, name_malformed_lines=True)) as chunks:
        return consume(chunks)


def read_whole_file(lake: Lake, spec: DatasetSpec, raw_key: str, con: duckdb.DuckDBPyConnection) -> FileRead:
    """All of one file's rows at once (a CDC batch is merged as a whole)."""
    chunks = consume_raw_file(lake, spec, raw_key, con, list)
    return FileRead(raw_key, sum(c.rows_in for c in chunks), pa.concat_tables(c.valid for c in chunks),
                    [row for c in chunks for row in c.rejected], chunks[0].new_columns)


def _validated_chunks(spec: DatasetSpec, raw_key: str, names: list[str], new_columns: list[str],
                      con: duckdb.DuckDBPyConnection, chunks: Iterator[pa.Table]) -> Iterator[FileRead]:
    for chunk in chunks:
        con.register("file_chunk", chunk)
        try:
            yield _validated(spec, raw_key, "file_chunk", names, new_columns, con, chunk, [])
        finally:
            con.unregister("file_chunk")  # free the chunk's buffers before the next one


def _validated(spec: DatasetSpec, raw_key: str, source: str, names: list[str], new_columns: list[str],
               con: duckdb.DuckDBPyConnection, rows: pa.Table | None, rejected: list[dict]) -> FileRead:
    valid, bad = _type_and_validate(spec, source, names, new_columns, con, rows)
    return FileRead(raw_key, valid.num_rows + len(bad) + len(rejected), valid, rejected + bad, new_columns)


def _escape(text: str) -> str:
    return text.replace("'", "''")


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def _described(exc: Exception) -> str:
    """What a reader's exception says, in a line, with its type where the message may not say it."""
    if isinstance(exc, (CorruptArchive, duckdb.Error, pa.ArrowException)):  # these messages say what failed
        return _first_line(exc)
    return f"{type(exc).__name__}: {_first_line(exc)}".rstrip(": ")


def _csv_header(storage: Storage, spec: DatasetSpec, raw_key: str) -> list[str]:
    """The header's column names, lower case."""
    opts = spec.source.csv
    if not opts.header:
        raise IngestError(f"{spec.key}: {raw_key}: CSV without a header row is not supported", "source.csv.header")
    with open_data(storage, raw_key) as f:
        # utf-8-sig: a byte order mark (as spreadsheets write) is not part of the first name
        head = f.read(1 << 16).decode("utf-8-sig" if opts.encoding == "utf-8" else opts.encoding, errors="replace")
    # newline="": a header ended by a CR alone (old Mac line ends) is a line of its own
    header = next(csv.reader(io.StringIO(head, newline=""), delimiter=opts.delimiter, quotechar=opts.quote_char), [])
    names = [h.strip().lower() for h in header]
    if not names or len(set(names)) != len(names) or not all(names):
        raise IngestError(f"{spec.key}: {raw_key}: header row {header!r} is empty or has duplicate names", "header")
    return names


def _read_csv_duckdb(spec: DatasetSpec, raw_key: str, path: str, names: list[str],
                     con: duckdb.DuckDBPyConnection) -> tuple[str, list[dict]]:
    """The whole file as text by DuckDB's reader, which names each malformed line: (relation
    name, the malformed lines as rejected rows)."""
    opts = spec.source.csv
    columns = "{" + ", ".join(f"'{_escape(n)}': 'VARCHAR'" for n in names) + "}"
    nulls = "[" + ", ".join(sql_literal(v) for v in opts.null_values) + "]"
    q = sql_literal(opts.quote_char)
    source = (f"read_csv('{_escape(path)}', header=true, hive_partitioning=false, compression='none', auto_detect=false, columns={columns}, "
              f"delim={sql_literal(opts.delimiter)}, quote={q}, escape={q}, nullstr={nulls}, "
              f"encoding={sql_literal(opts.encoding)}, strict_mode=true, store_rejects=true, "
              f"rejects_table='csv_rejects', rejects_scan='csv_reject_scans')")
    con.execute("DROP TABLE IF EXISTS csv_rejects; DROP TABLE IF EXISTS csv_reject_scans")
    con.execute(f"CREATE OR REPLACE TEMP TABLE csv_raw AS SELECT * FROM {source}")
    rejects = con.execute("SELECT line, error_type, error_message, csv_line FROM csv_rejects ORDER BY line").fetchall()
    for line, error_type, message, _ in rejects:
        if error_type == "UNQUOTED VALUE":  # an unterminated quote swallows the rest of the file
            raise IngestError(f"{spec.key}: {raw_key}: malformed CSV at line {line}: {message}", "")
    first_per_line = {line: (message, raw_line) for line, _, message, raw_line in reversed(rejects)}
    rejected = [{"row_number": line, "field": "", "reason": f"malformed CSV row: {message}", "record": raw_line}
                for line, (message, raw_line) in sorted(first_per_line.items())]
    return _numbered(con, "csv_raw", "csv_rows"), rejected


# Types pyarrow's CSV reader parses no more leniently than DuckDB's TRY_CAST, so reading a column
# typed gives the values SQL validation would (a value it cannot parse switches the read to text).
ARROW_PARSED_TYPES = ("int", "float", "date", "timestamp", "decimal")


def _csv_chunks(storage: Storage, spec: DatasetSpec, raw_key: str, names: list[str]) -> Iterator[pa.Table]:
    """The file's rows, with `_row` (the row's number in the file), a chunk at a time from
    pyarrow's multi-threaded streaming reader: spec columns typed where pyarrow parses them as
    DuckDB would, the rest as text. From a value that does not parse on, the file is read as text
    (validation then says which rows are bad; the rows before it read the same either way)."""
    opts = spec.source.csv
    declared = {c.name: c for c in spec.columns}
    typed = {n: arrow_type(declared[n]) for n in names
             if n in declared and declared[n].type.split("(")[0] in ARROW_PARSED_TYPES}
    malformed = []

    def skip(row) -> str:
        malformed.append(row)
        return "skip"

    done = 0  # rows yielded so far
    for types in ([typed, {}] if typed else [{}]):
        column_types = {n: types.get(n, pa.string()) for n in names}
        try:
            with open_data(storage, raw_key) as f:
                reader = pa_csv.open_csv(
                    f, read_options=pa_csv.ReadOptions(column_names=names, skip_rows=1, encoding=opts.encoding,
                                                       block_size=CSV_BLOCK_BYTES),
                    parse_options=pa_csv.ParseOptions(delimiter=opts.delimiter, quote_char=opts.quote_char,
                                                      double_quote=True, invalid_row_handler=skip),
                    convert_options=pa_csv.ConvertOptions(column_types=column_types, null_values=opts.null_values,
                                                          strings_can_be_null=True))
                read = 0  # rows of this pass, including those yielded by the typed pass
                for batches in _chunked(reader):
                    if malformed:
                        raise MalformedCsv(raw_key)
                    rows = pa.Table.from_batches(batches, reader.schema)
                    fresh = rows.slice(min(rows.num_rows, max(0, done - read)))
                    read += rows.num_rows
                    if fresh.num_rows:
                        yield _numbered_chunk(fresh, done)
                        done += fresh.num_rows
            if malformed:
                raise MalformedCsv(raw_key)
            if not done:  # a header and no rows
                yield _numbered_chunk(pa.schema(list(column_types.items())).empty_table(), 0)
            return
        except pa.ArrowInvalid as exc:
            if malformed or "CSV conversion error" not in str(exc) or not types:
                raise MalformedCsv(raw_key) from None
        except UnicodeError:
            raise MalformedCsv(raw_key) from None


def _parquet_chunks(parquet: pq.ParquetFile) -> Iterator[pa.Table]:
    """The file's rows, with `_row`, a chunk at a time (row groups decoded as needed)."""
    done = 0
    for batches in _chunked(parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS)):
        yield _numbered_chunk(pa.Table.from_batches(batches, parquet.schema_arrow), done)
        done += sum(b.num_rows for b in batches)
    if not done:
        yield _numbered_chunk(parquet.schema_arrow.empty_table(), 0)


def _chunked(reader: Iterable[pa.RecordBatch]) -> Iterator[list[pa.RecordBatch]]:
    """The reader's batches in lists of about CHUNK_BYTES."""
    chunk, size = [], 0
    for batch in reader:
        chunk.append(batch)
        size += batch.nbytes
        if size >= CHUNK_BYTES:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _numbered_chunk(rows: pa.Table, first: int) -> pa.Table:
    return rows.append_column("_row", pa.array(np.arange(first + 1, first + rows.num_rows + 1)))


def _numbered(con: duckdb.DuckDBPyConnection, table: str, view: str) -> str:
    """A view of a just-read file's rows with `_row`, the row's number in the file. From the
    table's rowid (insertion order is file order): half the cost of `row_number() OVER ()`."""
    con.execute(f"CREATE OR REPLACE TEMP VIEW {view} AS SELECT rowid + 1 AS _row, * FROM {table}")
    return view


def _read_jsonl(spec: DatasetSpec, path: str, con: duckdb.DuckDBPyConnection) -> str:
    con.execute(f"CREATE OR REPLACE TEMP TABLE json_raw AS "
                f"SELECT json FROM read_ndjson_objects('{_escape(path)}', hive_partitioning=false, compression='uncompressed')")
    _numbered(con, "json_raw", "json_lines")
    keys = [k for (k,) in con.execute(
        "SELECT DISTINCT unnest(json_keys(json)) AS k FROM json_lines ORDER BY k").fetchall()]
    bad_keys = [k for k in keys if not IDENTIFIER.match(k.lower())]
    if bad_keys:
        raise IngestError(f"{spec.key}: unexpected field name {bad_keys[0]!r} is not a valid identifier", bad_keys[0])
    selects = ", ".join(f"json_extract_string(json, {sql_literal('$.' + k)}) AS \"{k.lower()}\"" for k in keys)
    con.execute(f"CREATE OR REPLACE TEMP TABLE json_rows AS SELECT _row, {selects or 'NULL AS _empty'} FROM json_lines")
    return "json_rows"


def _check_columns(spec: DatasetSpec, raw_key: str, names: list[str]) -> list[str]:
    present = {n.lower() for n in names} - {"_row"}
    expected = {c.name for c in spec.columns}
    if spec.load_mode == "cdc":
        cdc = spec.cdc
        present -= {cdc.op_column.lower(), cdc.timestamp_column.lower()}
        if cdc.sequence_column:
            present.discard(cdc.sequence_column.lower())
    for column in spec.columns:
        if column.name not in present and not column.nullable:
            raise IngestError(f"{spec.key}: {raw_key}: required column {column.name!r} is missing", column.name)
    extra = sorted(present - expected)
    if extra and spec.schema_drift == "quarantine":
        raise IngestError(f"{spec.key}: {raw_key}: unexpected column {extra[0]!r} (schema_drift: quarantine)", extra[0])
    for name in extra:
        if not IDENTIFIER.match(name) or name in LINEAGE_COLUMNS:
            raise IngestError(f"{spec.key}: {raw_key}: unexpected column {name!r} is not a valid identifier", name)
    return extra


def column_checks(column: Column, src: str, typed: str) -> list[tuple[str, str]]:
    """(condition, reason) SQL pairs for one column; the first condition that holds rejects the row.

    Reasons quote the offending value, except for PII columns.
    """
    value = "''" if column.pii else f"coalesce(CAST({src} AS VARCHAR), '')"

    def says(text: str, with_value: bool = True) -> str:
        prefix = sql_literal(f"{column.name}: {text}")
        return f"{prefix} || ': ' || {value}" if with_value and not column.pii else prefix

    checks = []
    if column.type != "string":
        checks.append((f"{src} IS NOT NULL AND {typed} IS NULL", says(f"not a valid {column.type}")))
    if not column.nullable:
        checks.append((f"{typed} IS NULL", says("required value is missing", with_value=False)))
    if column.enum is not None:
        allowed = ", ".join(sql_literal(v) for v in column.enum)
        checks.append((f"{typed} NOT IN ({allowed})", says(f"not one of {', '.join(column.enum)}")))
    if column.pattern is not None:
        checks.append((f"NOT regexp_full_match({typed}, {sql_literal(column.pattern)})",
                       says(f"does not match the pattern {column.pattern}")))
    bound_type = duckdb_type(column)
    if column.min is not None:
        checks.append((f"{typed} < CAST({sql_literal(column.min)} AS {bound_type})", says(f"below the minimum {column.min}")))
    if column.max is not None:
        checks.append((f"{typed} > CAST({sql_literal(column.max)} AS {bound_type})", says(f"above the maximum {column.max}")))
    return checks


def _type_and_validate(spec: DatasetSpec, source: str, names: list[str], new_columns: list[str],
                       con: duckdb.DuckDBPyConnection, rows: pa.Table | None = None) -> tuple[pa.Table, list[dict]]:
    """Cast every column with TRY_CAST and evaluate the spec's rules in one vectorised pass. When
    `rows` (the source as Arrow) already has every column in its spec type, SQL only finds the
    broken rules and the values stay in Arrow, uncopied."""
    actual = {n.lower(): n for n in names if n != "_row"}
    typed_cols, field_cases, reason_cases = [], [], []
    cdc = _cdc_expressions(spec, actual) if spec.load_mode == "cdc" else {}
    if cdc:
        for condition, field_name, reason in [
            (f"{cdc['_op']} NOT IN ('I', 'U', 'D')", spec.cdc.op_column, f"{spec.cdc.op_column}: not one of I, U, D"),
            (f"{cdc['_cdc_ts']} IS NULL", spec.cdc.timestamp_column,
             f"{spec.cdc.timestamp_column}: missing or not a timestamp"),
        ]:
            field_cases.append(f"WHEN {condition} THEN {sql_literal(field_name)}")
            reason_cases.append(f"WHEN {condition} THEN {sql_literal(reason)}")
    for column in spec.columns:
        if column.name not in actual:
            typed_cols.append(f'CAST(NULL AS {duckdb_type(column)}) AS "{column.name}"')
            if not column.nullable:  # present in no row: every row fails
                field_cases.append(f"WHEN true THEN {sql_literal(column.name)}")
                reason_cases.append(f"WHEN true THEN {sql_literal(column.name + ': required value is missing')}")
            continue
        src = f'src."{actual[column.name]}"'
        typed = f"TRY_CAST({src} AS {duckdb_type(column)})"
        typed_cols.append(f'{typed} AS "{column.name}"')
        for condition, reason in column_checks(column, src, typed):
            if cdc and column.name not in spec.primary_key:
                condition = f"({condition}) AND {cdc['_op']} <> 'D'"  # DMS deletes may carry only the key
            field_cases.append(f"WHEN {condition} THEN {sql_literal(column.name)}")
            reason_cases.append(f"WHEN {condition} THEN {reason}")
    typed_cols += [f'src."{actual[n]}" AS "{n}"' for n in new_columns]
    typed_cols += [f"{expr} AS {alias}" for alias, expr in cdc.items()]
    field_sql = f"CASE {' '.join(field_cases)} END" if field_cases else "NULL"
    reason_sql = f"CASE {' '.join(reason_cases)} END" if reason_cases else "NULL"
    # One pass: typed values and the first broken rule of every row; bad rows are split off in Arrow.
    already_typed = rows is not None and not cdc and all(
        c.name not in actual or rows.schema.field(actual[c.name]).type == arrow_type(c) for c in spec.columns)
    if already_typed:
        if _rules_hold(spec, rows, actual):  # nothing for SQL to find
            no_verdict = pa.nulls(rows.num_rows, pa.string())
            verdicts = {"_field": no_verdict, "_reason": no_verdict}
        else:
            verdicts = con.execute(f"SELECT src._row AS _row, {field_sql} AS _field, {reason_sql} AS _reason "
                                   f"FROM {source} AS src").fetch_arrow_table().sort_by("_row")
        columns = {"_row": rows["_row"], "_field": verdicts["_field"], "_reason": verdicts["_reason"]}
        for c in spec.columns:
            columns[c.name] = rows[actual[c.name]] if c.name in actual else pa.nulls(rows.num_rows, arrow_type(c))
        columns |= {n: rows[actual[n]] for n in new_columns}
        checked = pa.table(columns)
    else:
        checked = con.execute(f"SELECT src._row AS _row, {field_sql} AS _field, {reason_sql} AS _reason, "
                              f"{', '.join(typed_cols)} FROM {source} AS src").fetch_arrow_table()
    failed = pc.is_valid(checked["_reason"])
    bad_rows = checked.filter(failed).select(["_row", "_field", "_reason"]).to_pylist()
    valid = (checked.filter(pc.invert(failed)) if bad_rows else checked).drop_columns(["_field", "_reason"])
    records = {}
    if bad_rows:
        if source == "json_rows":
            record, origin = "src.json", "json_lines"
        else:
            record, origin = "to_json({" + ", ".join(f"{sql_literal(n)}: src.\"{n}\"" for n in actual.values()) + "})", source
        records = dict(con.execute(f"SELECT src._row, {record} FROM {origin} AS src WHERE src._row IN "
                                   f"(SELECT unnest(?))", [[r["_row"] for r in bad_rows]]).fetchall())
    bad = [{"row_number": r["_row"], "field": r["_field"], "reason": r["_reason"], "record": records.get(r["_row"])}
           for r in bad_rows]
    return valid, bad


def _rules_hold(spec: DatasetSpec, rows: pa.Table, actual: dict[str, str]) -> bool:
    """Whether Arrow's aggregates prove that no row of `rows` (spec columns already in their
    types) breaks a rule: a few vectorised passes instead of SQL's per-row CASE, on the reading
    thread, the busier one. False when a rule may be broken or is not provable this way
    (patterns, float bounds, a bound Arrow parses differently from SQL's CAST)."""
    for column in spec.columns:
        if column.name not in actual:
            if column.nullable or rows.num_rows == 0:
                continue
            return False
        values = rows[actual[column.name]]
        if values.null_count == len(values):  # a null breaks no rule but "required"
            if column.nullable:
                continue
            return False
        if (values.null_count and not column.nullable) or column.pattern is not None:
            return False
        if column.enum is not None and not pc.all(pc.is_in(pc.drop_null(values), pa.array(column.enum))).as_py():
            return False
        if column.min is None and column.max is None:
            continue
        if pa.types.is_floating(values.type):  # NaN orders differently
            return False
        low, high = pc.min_max(values).values()
        try:
            if column.min is not None and pc.less(low, pa.scalar(str(column.min)).cast(values.type)).as_py():
                return False
            if column.max is not None and pc.greater(high, pa.scalar(str(column.max)).cast(values.type)).as_py():
                return False
        except pa.ArrowInvalid:  # e.g. a bound with more decimals than the column: SQL rounds it
            return False
    return True


def _cdc_expressions(spec: DatasetSpec, actual: dict[str, str]) -> dict[str, str]:
    """SQL for the change columns: op (I when absent, as in DMS full loads), timestamp, sequence."""
    cdc = spec.cdc
    op = actual.get(cdc.op_column.lower())
    ts = actual.get(cdc.timestamp_column.lower())
    seq = actual.get(cdc.sequence_column.lower()) if cdc.sequence_column else None
    return {
        "_op": f"upper(coalesce(CAST(src.\"{op}\" AS VARCHAR), 'I'))" if op else "'I'",
        "_cdc_ts": f"TRY_CAST(src.\"{ts}\" AS TIMESTAMP)" if ts else "CAST(NULL AS TIMESTAMP)",
        "_cdc_seq": f"CAST(src.\"{seq}\" AS VARCHAR)" if seq else "CAST(NULL AS VARCHAR)",
    }


# --- 3. typed rows → staged | quarantine ------------------------------------------------
@dataclass
class StageReport:
    dataset: str
    batch_dates: list[date]  # empty for an unpartitioned dataset
    files: list[str] = field(default_factory=list)
    rows_in: int = 0
    rows_staged: int = 0
    rows_quarantined: int = 0
    quarantined_files: list[dict] = field(default_factory=list)
    new_columns: list[str] = field(default_factory=list)
    preview: pa.Table | None = None
    cdc: list = field(default_factory=list)  # CdcResult per applied group (full load, changes)
    loads: list[dict] = field(default_factory=list)  # the rows recorded in staged.loads, one per file

    @property
    def reconciled(self) -> bool:
        return self.rows_in == self.rows_staged + self.rows_quarantined

    def by_batch(self) -> dict[date, StageReport]:
        """The report's counts split by daily batch (from its per-file loads)."""
        days: dict[date, StageReport] = {}
        for load in self.loads:
            day = days.setdefault(load["batch_date"], StageReport(self.dataset, [load["batch_date"]]))
            day.files.append(load["raw_key"])
            day.rows_in += load["rows_in"]
            day.rows_staged += load["rows_staged"]
            day.rows_quarantined += load["rows_quarantined"]
        for quarantined in self.quarantined_files:
            days[quarantined["batch_date"]].quarantined_files.append(quarantined)
        return days


def accepted_files(lake: Lake, spec: DatasetSpec) -> list[dict]:
    """Manifest rows of the dataset's files in raw, oldest batch first."""
    rows = read_system(lake, "raw", "manifest", And(EqualTo("dataset", spec.key), EqualTo("status", "accepted")))
    return sorted(rows.to_pylist(), key=lambda r: (r["batch_date"], r["raw_key"]))


def files_for_batches(lake: Lake, spec: DatasetSpec, batch_dates: list[date] | None) -> list[dict]:
    """Which raw files make up staged batches: the days' files, the latest snapshot, or all."""
    files = accepted_files(lake, spec)
    if spec.daily_partitioned:
        if not batch_dates:
            raise ValueError(f"{spec.key} is partitioned by day: give batch dates")
        wanted = set(batch_dates)
        return [f for f in files if f["batch_date"] in wanted]
    if spec.load_mode == "snapshot" and files:
        latest = max(f["batch_date"] for f in files)
        return [f for f in files if f["batch_date"] == latest]
    return files


def stage(lake: Lake, spec: DatasetSpec, batches: date | list[date] | None = None, run_id: str = "") -> StageReport:
    """Build the staged table (or some daily batches of it) from the raw zone; idempotent.

    Files are read, validated and written to Iceberg data files a chunk at a time, so memory
    holds two chunks' rows whatever the file's or the batch's size; the batch (a day, a backfill
    range, or everything) is then replaced in one commit.
    """
    if spec.load_mode == "cdc":
        return stage_cdc(lake, spec, run_id)
    days = [batches] if isinstance(batches, date) else sorted(batches or [])
    # In file-name order: of two rows with one primary key, the one in the earlier file stays.
    files = sorted(files_for_batches(lake, spec, days), key=lambda f: f["raw_key"])
    report = StageReport(spec.key, days, [f["raw_key"] for f in files])
    table = _staged_table(lake, spec)  # exists (empty) so that checks and queries see the dataset
    if not files:
        return report  # staged rows only ever come from raw files, so a batch without any has none
    reads, writer = [], _BatchWriter(lake, spec, table)
    con = lake.connect(views=False)
    try:
        for f in files:
            try:
                reads.append((writer.add_file(f, con), f))
            except IngestError as exc:
                report.quarantined_files.append(_quarantine_file(lake, spec, f, exc, run_id))
        data_files = writer.finish()
    except BaseException:  # storage down: the table stays as it was, without the files written for it
        writer.discard()
        raise
    finally:
        con.close()
        writer.close()
    where = In("_batch_date", days) if spec.daily_partitioned else AlwaysTrue()
    try:
        retry_commit(lambda: replace_rows_with_files(lake.load_table(spec.staged_namespace, spec.name), where,
                                                     data_files))
    except CommitFailedException:  # conflicts outlasted the retries: never committed (any other error may have)
        writer.discard()
        raise
    report.rows_staged, report.preview = writer.rows_staged, writer.preview
    report.rows_in = sum(r.rows_in for r, _ in reads)
    report.new_columns = sorted({c for r, _ in reads for c in r.new_columns})
    _record(lake, spec, report, reads, writer.rejected, run_id)
    return report


def is_full_load_file(spec: DatasetSpec, raw_key: str) -> bool:
    return re.fullmatch(spec.cdc.full_load_pattern, PurePosixPath(raw_key).name) is not None


def stage_cdc(lake: Lake, spec: DatasetSpec, run_id: str = "") -> StageReport:
    """Apply the DMS files not yet applied: full loads first, then changes, ordered by the data."""
    from quayside.cdc import apply_changes

    applied = set(read_system(lake, "staged", "loads", EqualTo("dataset", spec.key))["raw_key"].to_pylist())
    files = [f for f in accepted_files(lake, spec) if f["raw_key"] not in applied]
    report = StageReport(spec.key, [], [f["raw_key"] for f in files])
    reads = _read_files(lake, spec, files, report, run_id)
    schema = pa.schema(list(staged_schema(spec)) + list(CDC_COLUMNS))
    is_full_load = [is_full_load_file(spec, f["raw_key"]) for _, f in reads]
    for full_load in (True, False):
        batch = [_with_lineage(r.valid.drop_columns(["_row"]), f)
                 for (r, f), fl in zip(reads, is_full_load) if fl == full_load]
        changes = _concat(batch, schema)
        if changes.num_rows:
            report.cdc.append(apply_changes(lake, spec, changes, full_load=full_load))
            report.preview = changes.slice(0, 10)
            report.rows_staged += changes.num_rows
    rejected = [row | {"raw_key": f["raw_key"], "batch_date": f["batch_date"]} for r, f in reads for row in r.rejected]
    _record(lake, spec, report, reads, rejected, run_id)
    return report


def _read_files(lake: Lake, spec: DatasetSpec, files: list[dict], report: StageReport,
                run_id: str) -> list[tuple[FileRead, dict]]:
    """Read each file; a file that cannot be read at all goes to quarantine whole."""
    reads = []
    con = lake.connect(views=False)
    try:
        for f in files:
            try:
                reads.append((read_whole_file(lake, spec, f["raw_key"], con), f))
            except IngestError as exc:
                report.quarantined_files.append(_quarantine_file(lake, spec, f, exc, run_id))
    finally:
        con.close()
    report.rows_in = sum(r.rows_in for r, _ in reads)
    return reads


def _quarantine_file(lake: Lake, spec: DatasetSpec, f: dict, exc: IngestError, run_id: str) -> dict:
    key = f["raw_key"]
    if lake.quarantine.info(key) is None:
        lake.quarantine.copy_from(lake.raw, key, key)
    return {"dataset": spec.key, "raw_key": key, "quarantine_key": key, "batch_date": f["batch_date"],
            "reason": exc.reason, "field": exc.field, "quarantined_at": now_utc(), "run_id": run_id}


def _with_lineage(valid: pa.Table, f: dict) -> pa.Table:
    n = valid.num_rows
    return (valid.append_column("_source_file", pa.repeat(pa.scalar(f["raw_key"], pa.string()), n))
            .append_column("_batch_date", pa.repeat(pa.scalar(f["batch_date"], pa.date32()), n))
            .append_column("_ingested_at", pa.repeat(pa.scalar(f["ingested_at"], pa.timestamp("us", tz="UTC")), n)))


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    """Concatenate file tables onto the spec's schema; drifted columns are kept (as promoted types)."""
    if not tables:
        return schema.empty_table()
    merged = pa.concat_tables(tables, promote_options="permissive")
    return conform(merged, pa.unify_schemas([schema, merged.schema], promote_options="permissive"))


def conform(data: pa.Table, schema: pa.Schema) -> pa.Table:
    """Reorder, fill missing nullable columns with nulls and cast to `schema`."""
    columns = []
    for target in schema:
        if target.name in data.column_names:
            columns.append(data[target.name].cast(target.type))
        else:
            columns.append(pa.nulls(data.num_rows, target.type))
    return pa.Table.from_arrays(columns, schema=schema)


class _BatchWriter:
    """Writes a batch's rows to Iceberg data files as they are read, chunk by chunk, for one
    commit at the end. A file that fails midway leaves nothing behind: its data files are
    deleted and its keys forgotten.

    A chunk gets its lineage columns and is written to Parquet on a writer thread while the next
    chunk (of the same file or the next) is read, validated and de-duplicated; both release the
    GIL, so two cores work at once. At most WRITES_IN_FLIGHT writes are pending, which bounds memory.

    Small chunks (small files) are held, with the next files', up to HELD_BYTES and written as one
    data file. They are written only between files, so a file that fails leaves no rows in
    anything written."""

    def __init__(self, lake: Lake, spec: DatasetSpec, table: Table):
        self.lake, self.spec, self.table = lake, spec, table
        self.seen = _SeenKeys(spec)
        self.files_written: list[list[DataFile]] = []  # each staged file's data files
        self.pending: deque[tuple[Future, list[DataFile]]] = deque()  # (write in flight, where its files go)
        self.held: list[tuple[pa.Table, dict]] = []  # (small chunk, its file) not written yet
        self.held_bytes = 0
        self.writes = ThreadPoolExecutor(max_workers=WRITES_IN_FLIGHT, thread_name_prefix="quayside-stage-write")
        self.rejected: list[dict] = []
        self.rows_staged = 0
        self.preview: pa.Table | None = None

    @property
    def data_files(self) -> list[DataFile]:
        """The data files written so far (not those of the rows still held)."""
        self._settle(0)
        return [data_file for files in self.files_written for data_file in files]

    def finish(self) -> list[DataFile]:
        """Write what is held; all the batch's data files."""
        self._write_held()
        return self.data_files

    def _write_held(self) -> None:
        if self.held:
            written: list[DataFile] = []
            self._submit(self.held, written)
            self.files_written.append(written)
            self.held, self.held_bytes = [], 0

    def _submit(self, chunks: list[tuple[pa.Table, dict]], written: list[DataFile]) -> None:
        """Write `chunks` on a writer thread; their data files go to `written`."""
        self.pending.append((self.writes.submit(_write_staged_files, self.table, chunks), written))

    def _settle(self, in_flight: int) -> None:
        """Wait until at most `in_flight` writes are pending."""
        while len(self.pending) > in_flight:
            write, files = self.pending.popleft()
            files.extend(write.result())

    def add_file(self, f: dict, con: duckdb.DuckDBPyConnection) -> FileRead:
        """Stage one raw file; returns its totals (rows in, new columns)."""
        return consume_raw_file(self.lake, self.spec, f["raw_key"], con, lambda chunks: self._add_chunks(f, chunks))

    def _add_chunks(self, f: dict, chunks: Iterable[FileRead]) -> FileRead:
        totals = FileRead(f["raw_key"], 0, pa.table({}), [])
        written, rejected, rows_staged = [], [], 0
        self.seen.begin()
        try:
            for read in chunks:
                staged, duplicates = self.seen.split(read.valid, f, lambda: self._keys_in(self.data_files + written))
                if read.new_columns and not totals.new_columns:
                    with self.table.update_schema() as update:
                        update.union_by_name(staged.schema.remove(staged.schema.get_field_index("_row")))
                    self.table = self.lake.load_table(self.spec.staged_namespace, self.spec.name)
                if self.held_bytes + staged.nbytes < HELD_BYTES:
                    self.held.append((staged, f))
                    self.held_bytes += staged.nbytes
                else:
                    self._submit([(staged, f)], written)
                    self._settle(WRITES_IN_FLIGHT)
                rows_staged += staged.num_rows
                if self.preview is None and staged.num_rows:  # a copy: a slice would keep the chunk's buffers alive
                    first = staged.take(pa.array(np.arange(min(10, staged.num_rows))))
                    self.preview = conform(_with_lineage(first, f), self.table.schema().as_arrow())
                rejected += [row | {"raw_key": f["raw_key"], "batch_date": f["batch_date"]} for row in read.rejected]
                rejected += duplicates
                totals.rows_in += read.rows_in
                totals.new_columns = read.new_columns
        except BaseException:
            self.held = [(t, held_for) for t, held_for in self.held if held_for is not f]
            self.held_bytes = sum(t.nbytes for t, _ in self.held)
            mine = [write for write, files in self.pending if files is written]
            self.pending = deque(entry for entry in self.pending if entry[1] is not written)
            for write in mine:  # the files a failed write got to are lost with it
                if not write.cancel() and write.exception() is None:
                    written.extend(write.result())
            self.seen.rollback()
            for data_file in written:
                self.table.io.delete(data_file.file_path)
            raise
        self.files_written.append(written)
        if self.held_bytes >= HELD_BYTES // 2:
            self._write_held()
        self.rejected += rejected
        self.rows_staged += rows_staged
        return totals

    def discard(self) -> None:
        """Delete the data files written so far (the batch will not be committed)."""
        for data_file in self.data_files:
            self.table.io.delete(data_file.file_path)

    def _keys_in(self, data_files: list[DataFile]) -> pa.Table:
        """The key columns of the rows in `data_files` and of those held."""
        keys = self.spec.primary_key
        tables = [pq.read_table(self.table.io.new_input(f.file_path).open(), columns=keys) for f in data_files]
        tables += [held.select(keys) for held, _ in self.held]
        return pa.concat_tables(tables, promote_options="permissive") if tables else pa.table({k: [] for k in keys})

    def close(self) -> None:
        self.writes.shutdown()
        self.seen.close()


def _write_staged_files(table: Table, chunks: list[tuple[pa.Table, dict]]) -> list[DataFile]:
    """Chunks of staged rows, each with the lineage of its file, as data files of the staged table."""
    schema = table.schema().as_arrow()
    data = pa.concat_tables([conform(_with_lineage(staged, f), schema) for staged, f in chunks])
    return write_slices(table, partition_slices(table, data))


class _SeenKeys:
    """Primary keys staged so far in this batch: a key's second appearance, later in the same file
    or in a later file, goes to quarantine.

    Only 64-bit key hashes are kept (8 bytes a row), in sorted runs each at least twice the size
    of the next, so each hash is merged O(log n) times. A bitmap of hashes' top bits (one bit
    set a key) answers most "seen?" questions; only its hits are binary-searched in the runs.
    A hash seen before is checked exactly against the keys actually written (`earlier`), which
    happens only for real duplicates (or a 1-in-2^64 collision).
    """

    FILTER_BITS = 27  # a 16 MB bitmap: under 6% of new keys hit it after 8M keys

    def __init__(self, spec: DatasetSpec):
        self.spec = spec
        self.con = duckdb.connect() if spec.primary_key else None
        self.keys = ", ".join(f'"{k}"' for k in spec.primary_key)
        self.runs: list[np.ndarray] = []
        self.at_file_start: list[np.ndarray] = []
        # A rolled-back file's bits stay set: they cost only a binary search later.
        self.filter = np.zeros(1 << (self.FILTER_BITS - 6), np.uint64) if spec.primary_key else None

    # One file's keys are one transaction: a file that fails midway is forgotten.
    def begin(self) -> None:
        self.at_file_start = list(self.runs)

    def rollback(self) -> None:
        self.runs = self.at_file_start

    def _filter_words(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each hash's word in the bitmap and its bit in that word (the hash's top bits)."""
        return hashes >> np.uint64(64 - self.FILTER_BITS + 6), np.uint64(1) << (
            (hashes >> np.uint64(64 - self.FILTER_BITS)) & np.uint64(63))

    def _add_run(self, ordered: np.ndarray) -> None:
        if not len(ordered):
            return  # a chunk of nothing but repeats: an empty run would break the binary searches
        np.bitwise_or.at(self.filter, *self._filter_words(ordered))
        self.runs.append(ordered)
        while len(self.runs) > 1 and len(self.runs[-2]) <= 2 * len(self.runs[-1]):
            newer, older = self.runs.pop(), self.runs.pop()
            self.runs.append(np.sort(np.concatenate([older, newer]), kind="stable"))  # merges two sorted runs

    def split(self, staged: pa.Table, f: dict, earlier: Callable[[], pa.Table]) -> tuple[pa.Table, list[dict]]:
        """(rows of file `f` with new keys, quarantine rows of the rest); `earlier()` gives the key
        columns of the rows staged so far."""
        if self.con is None or staged.num_rows == 0:
            return staged, []
        batch = staged.select(self.spec.primary_key).append_column("_i", pa.array(np.arange(staged.num_rows)))
        self.con.register("batch", batch)
        hashes = self.con.execute(f"SELECT hash({self.keys}) AS h FROM batch").fetchnumpy()["h"]
        words, bits = self._filter_words(hashes)
        hits = np.flatnonzero(self.filter[words] & bits)  # rows whose hash may be in the runs: few
        probed = hits[np.argsort(hashes[hits])]  # by hash: binary searches walk the runs in order
        needles, found = hashes[probed], np.zeros(len(probed), bool)
        for run in self.runs:
            found |= run[np.searchsorted(run, needles).clip(max=len(run) - 1)] == needles
        seen_before = np.zeros(len(hashes), bool)
        seen_before[probed] = found
        ordered = np.sort(hashes)
        repeated = ordered[1:][ordered[1:] == ordered[:-1]]
        maybe = seen_before | np.isin(hashes, repeated)
        dup_index = np.empty(0, np.int64)
        if maybe.any():  # confirm with the keys themselves
            self.con.register("maybe", batch.filter(maybe))
            self.con.register("earlier", earlier() if seen_before.any() else batch.schema.empty_table())
            match = " AND ".join(f'e."{k}" IS NOT DISTINCT FROM b."{k}"' for k in self.spec.primary_key)
            dup_index = self.con.execute(
                f"SELECT _i FROM (SELECT *, row_number() OVER (PARTITION BY {self.keys} ORDER BY _i) AS n FROM maybe) b "
                f"WHERE n > 1 OR EXISTS (SELECT 1 FROM earlier e WHERE {match})").fetchnumpy()["_i"]
            self.con.unregister("maybe")
            self.con.unregister("earlier")
        self.con.unregister("batch")
        keep = np.ones(len(hashes), bool)
        keep[dup_index] = False
        self._add_run(ordered if not len(dup_index) else np.sort(hashes[keep]))
        if not len(dup_index):
            return staged, []
        rejected = []
        for row in staged.filter(pa.array(~keep)).to_pylist():
            key = ", ".join(str(row[k]) for k in self.spec.primary_key)
            record = {k: v for k, v in row.items() if not k.startswith("_")}
            rejected.append({"raw_key": f["raw_key"], "batch_date": f["batch_date"],
                             "row_number": row["_row"], "field": ",".join(self.spec.primary_key),
                             "reason": f"duplicate primary key ({key}) in this batch",
                             "record": json.dumps(record, default=str)})
        return staged.filter(pa.array(keep)), rejected

    def close(self) -> None:
        if self.con is not None:
            self.con.close()


def _staged_table(lake: Lake, spec: DatasetSpec) -> Table:
    partition = (spec.partitioning.column, spec.partitioning.granularity) if spec.partitioning else None
    return lake.create_table(spec.staged_namespace, spec.name, staged_schema(spec), partition,
                             {"comment": spec.description})


def _record(lake: Lake, spec: DatasetSpec, report: StageReport, reads: list[tuple[FileRead, dict]],
            rejected: list[dict], run_id: str) -> None:
    """Write quarantine rows/files and the per-file load counts, replacing earlier runs' records."""
    when = now_utc()
    this_run = And(EqualTo("dataset", spec.key), In("raw_key", report.files)) if report.files else EqualTo("dataset", "\0")
    quarantined_rows = [r | {"dataset": spec.key, "quarantined_at": when, "run_id": run_id} for r in rejected]
    per_file_rejects: dict[str, int] = {}
    for r in rejected:
        per_file_rejects[r["raw_key"]] = per_file_rejects.get(r["raw_key"], 0) + 1
    loads = [{"dataset": spec.key, "raw_key": f["raw_key"], "batch_date": f["batch_date"], "rows_in": r.rows_in,
              "rows_staged": r.rows_in - per_file_rejects.get(f["raw_key"], 0),
              "rows_quarantined": per_file_rejects.get(f["raw_key"], 0), "status": "staged",
              "loaded_at": when, "run_id": run_id} for r, f in reads]
    loads += [{"dataset": spec.key, "raw_key": q["raw_key"], "batch_date": q["batch_date"], "rows_in": 0,
               "rows_staged": 0, "rows_quarantined": 0, "status": "quarantined", "loaded_at": when,
               "run_id": run_id} for q in report.quarantined_files]
    replace_rows(lake, "quarantine", "rows", quarantined_rows, this_run)
    replace_rows(lake, "quarantine", "files", report.quarantined_files, this_run)
    replace_rows(lake, "staged", "loads", loads, this_run)
    report.rows_quarantined, report.loads = len(rejected), loads
