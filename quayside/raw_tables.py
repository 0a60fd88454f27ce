"""The raw zone as Hive tables: `raw_<domain>.<name>`, partitioned by `ingest_date`, over exactly
the files that were delivered (`raw/<domain>/<name>/ingest_date=YYYY-MM-DD/<file>`).

- aws profile: an external Glue Data Catalog table per dataset (database `raw_<domain>`), with the
  SerDe of the spec's format, and one Glue partition per landing day, added by `land()` before it
  records the files (`register_landed`: one BatchCreatePartition call per landing, whose files all
  share one ingest day; a partition that exists already is fine; the table is looked up once per
  process, and created or updated when the spec changed). Athena reads it as any Hive table.
  Registered partitions rather than partition projection: the catalog then lists exactly the days
  that were delivered, and every Glue client (Athena, Spark, Redshift Spectrum) sees them.
- local profile: a DuckDB view per dataset, made by `Lake.connect()` (`create_views`) from a small
  definition `land()` writes to `<home>/raw_tables/<domain>.<name>.json`. The view globs the
  dataset's raw folder (`ingest_date=*/*<suffix>`, DuckDB's hive partitioning gives the column), so
  a connection lists no files itself and needs no specs.

Columns come from the spec, as a Hive table of the format would read them:
- CSV: every column a string, by position in the spec's order (OpenCSVSerDe; header line skipped).
  Locally also the spec's `null_values` read as NULL (Athena's OpenCSVSerDe gives '').
- JSON Lines: by key; JSON's own types (string, bigint, double, boolean, decimal), and dates and
  timestamps as the text delivered (JSON has no date type). Locally a value of the wrong type reads
  NULL (a line that isn't JSON: a row of NULLs); Athena's JsonSerDe fails the query on such a value.
- Parquet: by name, with the spec's types as Hive types (the file's physical types must match).
- CDC datasets (JSON/Parquet) also get the DMS columns (`op_column`, ... lowercased).
Not readable as a table, so left out locally: `.zip` files, gzipped Parquet, files without an
extension, Parquet files whose footer can't be read. (Athena reads every file under a partition.)
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import duckdb

from quayside.specs import IDENTIFIER, Column, CsvOptions, DatasetSpec, check_identifier, sql_literal

if TYPE_CHECKING:
    from quayside.lake import Lake

log = logging.getLogger(__name__)

PARTITION_KEY = "ingest_date"
INGEST_DAY = re.compile(r"(?:^|/)ingest_date=(\d{4}-\d{2}-\d{2})/[^/]+$")
SUFFIX = re.compile(r"^(\.[A-Za-z0-9_-]{1,16}){1,2}$")  # safe inside a glob and a SQL literal
SOURCE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")  # a CDC column as DMS names it (e.g. Op)
GLUE_BATCH = 100  # partitions per BatchCreatePartition call (Glue's limit)

HIVE_TYPES = {"string": "string", "int": "bigint", "float": "double", "bool": "boolean", "date": "date",
              "timestamp": "timestamp", "timestamptz": "timestamp"}
DUCKDB_TYPES = {"string": "VARCHAR", "int": "BIGINT", "float": "DOUBLE", "bool": "BOOLEAN", "date": "DATE",
                "timestamp": "TIMESTAMP", "timestamptz": "TIMESTAMPTZ"}
TEXT_IO = ("org.apache.hadoop.mapred.TextInputFormat", "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat")
FORMATS = {  # spec format: (SerDe, InputFormat, OutputFormat, Glue classification)
    "csv": ("org.apache.hadoop.hive.serde2.OpenCSVSerde", *TEXT_IO, "csv"),
    "jsonl": ("org.openx.data.jsonserde.JsonSerDe", *TEXT_IO, "json"),
    "parquet": ("org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
                "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
                "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat", "parquet"),
}


# --- what a dataset's raw table is -----------------------------------------------------
@dataclass(frozen=True)
class RawColumn:
    name: str  # the table's column (a lowercase identifier)
    source: str  # the name in the file (differs for DMS's `Op`)
    type: str  # the spec's type: string, int, ..., decimal(p,s)
    comment: str = ""

    def hive_type(self, fmt: str) -> str:
        if fmt == "csv" or (fmt == "jsonl" and self.type in ("date", "timestamp", "timestamptz")):
            return "string"
        return HIVE_TYPES.get(self.type, self.type)  # decimal(p,s) is the same in Hive

    def duckdb_type(self, fmt: str) -> str:
        if self.hive_type(fmt) == "string":
            return "VARCHAR"
        return DUCKDB_TYPES.get(self.type) or self.type.upper()


def namespace(spec: DatasetSpec) -> str:
    return f"raw_{spec.domain}"


def prefix(spec: DatasetSpec) -> str:
    """The dataset's folder in the raw zone (no trailing slash)."""
    return f"{spec.domain}/{spec.name}"


def columns(spec: DatasetSpec) -> list[RawColumn]:
    out = [RawColumn(c.name, c.name, c.type, c.description) for c in spec.columns]
    if spec.cdc is not None and spec.source.format != "csv":  # CSV is positional: DMS's columns come and go
        taken = {c.name for c in out} | {PARTITION_KEY}
        for source, type_ in ((spec.cdc.op_column, "string"), (spec.cdc.timestamp_column, "timestamp"),
                              (spec.cdc.sequence_column, "string")):
            if source and SOURCE_NAME.match(source) and IDENTIFIER.match(source.lower()) and source.lower() not in taken:
                out.append(RawColumn(source.lower(), source, type_, "CDC bookkeeping, as delivered"))
                taken.add(source.lower())
    return out


def registrable(spec: DatasetSpec) -> bool:
    """A data column named like the partition key would clash with it: such a dataset gets no raw table."""
    return spec.source.format in FORMATS and all(c.name != PARTITION_KEY for c in spec.columns)


def ingest_day(raw_key: str) -> date | None:
    match = INGEST_DAY.search(raw_key)
    return date.fromisoformat(match.group(1)) if match else None


def readable_suffix(raw_key: str, fmt: str) -> str | None:
    """The file-name ending a view globs for ('.csv', '.csv.gz'); None for what can't be read as a
    table: a zip, gzipped Parquet (DuckDB reads neither), a file without an extension."""
    suffixes = PurePosixPath(raw_key).suffixes
    if not suffixes or suffixes[-1].lower() == ".zip":
        return None
    suffix = "".join(suffixes[-2:]) if suffixes[-1] == ".gz" and len(suffixes) > 1 else suffixes[-1]
    if suffix.endswith(".gz") and fmt == "parquet":
        return None
    return suffix if SUFFIX.match(suffix) else None


def _minimal(suffixes: Iterable[str]) -> list[str]:
    """Drop a suffix another one covers ('.csv.gz' when '.gz' is there): a file is read once."""
    found = set(suffixes)
    return sorted(s for s in found if not any(o != s and s.endswith(o) for o in found))


def register_landed(lake: Lake, spec: DatasetSpec, raw_keys: list[str]) -> None:
    """Make files just placed in raw visible in `raw_<domain>.<name>`: on aws one Glue partition per
    landing day (created when missing, with the table); locally the view's definition. Cheap when
    there is nothing new: called by `land()` on its hot path."""
    if not raw_keys or not registrable(spec):
        return
    if lake.settings.profile == "aws":
        days = {d for d in map(ingest_day, raw_keys) if d is not None}
        if days:
            _register_glue(lake, spec, days)
    else:
        _register_local(lake, spec, {s for k in raw_keys if (s := readable_suffix(k, spec.source.format))})


def register_all(lake: Lake, specs: Iterable[DatasetSpec]) -> dict[str, int]:
    """(Re-)register every dataset's raw files, e.g. a lake that had files before raw tables existed:
    one listing of each dataset's raw folder. Returns ingest days per dataset."""
    registered = {}
    for spec in specs:
        if registrable(spec):
            keys = [f.key for f in lake.raw.list(prefix(spec) + "/")]
            register_landed(lake, spec, keys)
            registered[spec.key] = len({d for d in map(ingest_day, keys) if d is not None})
    return registered


# --- aws: the Glue Data Catalog ----------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _glue_client(region: str, endpoint_url: str):
    import boto3

    return boto3.client("glue", region_name=region, endpoint_url=endpoint_url or None)


def glue_client(lake: Lake):
    return _glue_client(lake.settings.region, lake.settings.endpoint_url)


def _catalog(lake: Lake) -> dict[str, str]:
    return {"CatalogId": lake.settings.glue_catalog_id} if lake.settings.glue_catalog_id else {}


def location(lake: Lake, spec: DatasetSpec) -> str:
    return lake.raw.uri(prefix(spec)) + "/"


def storage_descriptor(lake: Lake, spec: DatasetSpec) -> dict:
    fmt = spec.source.format
    serde, input_format, output_format, _ = FORMATS[fmt]
    params: dict[str, str] = {}
    if fmt == "csv":
        params = {"separatorChar": spec.source.csv.delimiter, "quoteChar": spec.source.csv.quote_char,
                  "escapeChar": "\\"}
    elif fmt == "jsonl":
        params = {"ignore.malformed.json": "true", "case.insensitive": "true"}
    return {
        "Columns": [{"Name": c.name, "Type": c.hive_type(fmt), "Comment": c.comment[:255]} for c in columns(spec)],
        "Location": location(lake, spec),
        "InputFormat": input_format,
        "OutputFormat": output_format,
        "Compressed": False,
        "SerdeInfo": {"SerializationLibrary": serde, "Parameters": params},
    }


def table_input(lake: Lake, spec: DatasetSpec) -> dict:
    """The Glue TableInput of the dataset's raw table; `quayside.definition` fingerprints the rest."""
    fmt = spec.source.format
    params = {"EXTERNAL": "TRUE", "classification": FORMATS[fmt][3], "has_encrypted_data": "false",
              "quayside.dataset": spec.key}
    if fmt == "csv" and spec.source.csv.header:
        params["skip.header.line.count"] = "1"
    definition = {
        "Name": spec.name,
        "Description": f"Raw files of {spec.key} as delivered, one partition per ingest_date. {spec.description}"[:2048],
        "TableType": "EXTERNAL_TABLE",
        "StorageDescriptor": storage_descriptor(lake, spec),
        "PartitionKeys": [{"Name": PARTITION_KEY, "Type": "date", "Comment": "UTC day the file was landed"}],
        "Parameters": params,
    }
    fingerprint = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:16]
    definition["Parameters"] = params | {"quayside.definition": fingerprint}
    return definition


_UP_TO_DATE: dict[tuple, str] = {}  # Glue tables this process made or checked: key -> fingerprint


def _ensure_glue_table(lake: Lake, spec: DatasetSpec, wanted: dict, again: bool = True) -> None:
    """Create the database and table if missing, replace a table whose definition changed."""
    glue, catalog, database = glue_client(lake), _catalog(lake), namespace(spec)
    cache_key = (lake.settings.region, lake.settings.endpoint_url, lake.settings.glue_catalog_id, database, spec.name)
    fingerprint = wanted["Parameters"]["quayside.definition"]
    if _UP_TO_DATE.get(cache_key) == fingerprint:
        return
    try:
        current = glue.get_table(**catalog, DatabaseName=database, Name=spec.name)["Table"]
    except glue.exceptions.EntityNotFoundException:
        current = None
    if current is None:
        with contextlib.suppress(glue.exceptions.AlreadyExistsException):
            glue.create_database(**catalog, DatabaseInput={
                "Name": database, "Description": f"Raw zone of {spec.domain}: the files as delivered",
                "LocationUri": lake.raw.uri(spec.domain) + "/"})
        try:
            glue.create_table(**catalog, DatabaseName=database, TableInput=wanted)
        except glue.exceptions.AlreadyExistsException:  # a concurrent landing made it first: check that one
            if not again:
                raise
            return _ensure_glue_table(lake, spec, wanted, again=False)
    elif current.get("Parameters", {}).get("quayside.definition") != fingerprint:
        if current.get("StorageDescriptor", {}).get("Location") != wanted["StorageDescriptor"]["Location"]:
            # The raw zone moved (another bucket): its partitions point at the old one. Start again;
            # the days landed since are re-added by their next landing or `register_all`.
            glue.delete_table(**catalog, DatabaseName=database, Name=spec.name)
            glue.create_table(**catalog, DatabaseName=database, TableInput=wanted)
        else:  # columns, SerDe options: new partitions get the new descriptor, existing ones keep theirs
            glue.update_table(**catalog, DatabaseName=database, TableInput=wanted)
    _UP_TO_DATE[cache_key] = fingerprint


def _register_glue(lake: Lake, spec: DatasetSpec, days: set[date]) -> None:
    wanted = table_input(lake, spec)
    _ensure_glue_table(lake, spec, wanted)
    glue, sd = glue_client(lake), wanted["StorageDescriptor"]
    create = functools.partial(glue.batch_create_partition, **_catalog(lake), DatabaseName=namespace(spec),
                               TableName=spec.name)
    ordered = sorted(days)
    for start in range(0, len(ordered), GLUE_BATCH):
        partitions = [{"Values": [day.isoformat()],
                       "StorageDescriptor": sd | {"Location": f"{sd['Location']}{PARTITION_KEY}={day.isoformat()}/"}}
                      for day in ordered[start:start + GLUE_BATCH]]
        try:
            answer = create(PartitionInputList=partitions)
        except glue.exceptions.EntityNotFoundException:  # the table was dropped since this process checked it
            _UP_TO_DATE.clear()
            _ensure_glue_table(lake, spec, wanted)
            answer = create(PartitionInputList=partitions)
        failed = [e for e in answer.get("Errors", []) if e["ErrorDetail"]["ErrorCode"] != "AlreadyExistsException"]
        if failed:
            detail = failed[0]["ErrorDetail"]
            raise RuntimeError(f"{spec.key}: Glue partition {failed[0]['PartitionValues']} of "
                               f"{namespace(spec)}.{spec.name}: {detail['ErrorCode']}: {detail.get('ErrorMessage', '')}")


# --- local: DuckDB views -----------------------------------------------------------------
def registry(lake: Lake) -> Path:
    return Path(lake.settings.home).resolve() / "raw_tables"


def _definition(spec: DatasetSpec) -> dict:
    return {"domain": spec.domain, "name": spec.name, "format": spec.source.format,
            "columns": [{"name": c.name, "source": c.source, "type": c.type} for c in columns(spec)],
            "csv": spec.source.csv.model_dump() if spec.source.format == "csv" else None}


def _read_definition(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None


def _register_local(lake: Lake, spec: DatasetSpec, suffixes: set[str]) -> None:
    path = registry(lake) / f"{spec.domain}.{spec.name}.json"

    def merged(current: dict | None) -> dict:
        return _definition(spec) | {"suffixes": _minimal(set((current or {}).get("suffixes", [])) | suffixes)}

    if (current := _read_definition(path)) is not None and merged(current) == current:
        return  # the usual case: nothing new, one small read
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as lock:  # concurrent landings of one dataset merge, not race
        fcntl.flock(lock, fcntl.LOCK_EX)
        document = merged(_read_definition(path))
        if not document["suffixes"]:
            return  # nothing readable landed yet (e.g. only zips): no view
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(document, indent=1), encoding="utf-8")
        os.replace(tmp, path)


def _ident(name: str) -> str:
    return '"' + check_identifier(name, "column name") + '"'


def file_globs(lake: Lake, document: dict) -> list[str]:
    """The dataset's readable raw files, one glob per file-name ending landed so far."""
    folder = lake.raw.path(f"{check_identifier(document['domain'], 'domain')}/{check_identifier(document['name'], 'name')}")
    return [f"{folder}/{PARTITION_KEY}=*/*{s}" for s in document["suffixes"] if SUFFIX.match(s)]


def view_sql(lake: Lake, document: dict, files: list[str] | None = None) -> tuple[str, str, str]:
    """(schema, view, SELECT) for a registry document, over `files` (default: `file_globs`). Every
    name and option is validated again here: the document is a file anyone with the lake folder
    could edit."""
    domain, name = check_identifier(document["domain"], "domain"), check_identifier(document["name"], "name")
    fmt = document["format"]
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}")
    cols = []
    for c in document["columns"]:
        check_identifier(c["name"], "column name")
        if not SOURCE_NAME.match(c["source"]) or c["source"].lower() != c["name"]:
            raise ValueError(f"column {c['name']!r}: bad name in the file {c['source']!r}")
        cols.append(RawColumn(c["name"], c["source"], Column(name=c["name"], type=c["type"]).type))  # a known type
    paths = file_globs(lake, document) if files is None else files
    if not paths:
        raise ValueError("no readable files")
    globs = "[" + ", ".join(map(sql_literal, paths)) + "]"
    hive = f"hive_partitioning=true, hive_types={{'{PARTITION_KEY}': 'DATE'}}"
    if fmt == "csv":
        csv = CsvOptions.model_validate(document["csv"])
        types = ", ".join(f"{sql_literal(c.name)}: 'VARCHAR'" for c in cols)
        nulls = f", nullstr=[{', '.join(map(sql_literal, csv.null_values))}]" if csv.null_values else ""
        source = (f"read_csv({globs}, columns={{{types}}}, header={str(csv.header).lower()}, auto_detect=false, "
                  f"delim={sql_literal(csv.delimiter)}, quote={sql_literal(csv.quote_char)}, "
                  f"escape={sql_literal(csv.quote_char)}, encoding={sql_literal(csv.encoding)}{nulls}, "
                  f"null_padding=true, strict_mode=false, ignore_errors=true, {hive})")
        select = ", ".join(_ident(c.name) for c in cols)
    elif fmt == "jsonl":
        # Read as text, then typed value by value: a value of the wrong type is NULL, not its whole line.
        types = ", ".join(f"{sql_literal(c.source)}: 'VARCHAR'" for c in cols)
        source = f"read_json({globs}, format='newline_delimited', columns={{{types}}}, ignore_errors=true, {hive})"
        select = ", ".join(f'"{c.source}" AS {_ident(c.name)}' if c.duckdb_type(fmt) == "VARCHAR" else
                           f'TRY_CAST("{c.source}" AS {c.duckdb_type(fmt)}) AS {_ident(c.name)}' for c in cols)
    else:
        # By name, as Hive's Parquet SerDe: union_by_name reads files whose columns differ, and
        # the typed empty row makes a column no file has yet read NULL instead of failing.
        typed = ", ".join(f'NULL::{c.duckdb_type(fmt)} AS "{c.source}"' for c in cols)
        source = (f"((SELECT {typed}, NULL::DATE AS {PARTITION_KEY} LIMIT 0) UNION ALL BY NAME "
                  f"(SELECT * FROM read_parquet({globs}, union_by_name=true, {hive})))")
        select = ", ".join(f'"{c.source}" AS {_ident(c.name)}' for c in cols)
    return f"raw_{domain}", name, f"SELECT {select}, {PARTITION_KEY} FROM {source}"


def create_views(lake: Lake, con: duckdb.DuckDBPyConnection) -> None:
    """A view `raw_<domain>.<name>` per registered dataset (about 1 ms each). A Parquet file whose
    footer can't be read is left out; a dataset that can't be read as a table at all (a hand-edited
    definition, files gone) still gets its view, one whose query fails saying why: a connection
    never fails because of the raw zone."""
    folder = registry(lake)
    try:
        entries = sorted(e.name for e in os.scandir(folder) if e.name.endswith(".json") and not e.name.startswith("."))
    except FileNotFoundError:
        return
    for entry in entries:
        document = _read_definition(folder / entry)
        domain, name = entry.removesuffix(".json").partition(".")[::2]
        if not (IDENTIFIER.match(domain) and IDENTIFIER.match(name)):
            continue
        con.execute(f'CREATE SCHEMA IF NOT EXISTS "raw_{domain}"')
        view = f'"raw_{domain}"."{name}"'
        try:
            if document is None or (document.get("domain"), document.get("name")) != (domain, name):
                raise ValueError(f"{entry}: not a raw table definition")
            _, _, select = view_sql(lake, document)
            try:
                con.execute(f"CREATE OR REPLACE VIEW {view} AS {select}")
            except duckdb.Error:
                if document["format"] != "parquet":
                    raise
                # A Parquet file whose footer can't be read (the staged layer quarantined it) fails
                # the whole glob: list the files, this once, and leave those out.
                good, bad = _readable_parquet(con, file_globs(lake, document))
                if not good or not bad:
                    raise
                log.info("raw_%s.%s: left out unreadable Parquet file(s) %s", domain, name, ", ".join(bad))
                con.execute(f"CREATE OR REPLACE VIEW {view} AS {view_sql(lake, document, good)[2]}")
        except Exception as exc:  # noqa: BLE001 - duckdb, pydantic and key errors alike: report, don't fail
            message = f"raw_{domain}.{name} cannot be read: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
            log.info(message)
            con.execute(f"CREATE OR REPLACE VIEW {view} AS SELECT error({sql_literal(message)}) AS error")


def _readable_parquet(con: duckdb.DuckDBPyConnection, globs: list[str]) -> tuple[list[str], list[str]]:
    good, bad = [], []
    for pattern in globs:
        for (path,) in con.execute("SELECT file FROM glob(?) ORDER BY file", [pattern]).fetchall():
            try:
                con.execute("SELECT count(*) FROM parquet_schema(?)", [path]).fetchall()
                good.append(path)
            except duckdb.Error:
                bad.append(path)
    return good, bad
