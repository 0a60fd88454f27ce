"""Dataset specs: one YAML file per dataset drives everything Quayside does with it.

A spec is validated on load; every error names the file and the field
(``datasets/prisons/population.yaml: columns[2].type: ...``).
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
COLUMN_TYPES = ("string", "int", "float", "bool", "date", "timestamp", "timestamptz")
DECIMAL_TYPE = re.compile(r"^decimal\((\d{1,2}),\s*(\d{1,2})\)$")
# Lineage columns Quayside adds to every staged row; specs may not declare them.
LINEAGE_COLUMNS = ("_source_file", "_batch_date", "_ingested_at")
# Columns the history table of a CDC dataset adds; with the row positions its merge reads, reserved.
CDC_HISTORY_COLUMNS = ("op", "valid_from", "valid_to", "is_current")
CDC_RESERVED_COLUMNS = CDC_HISTORY_COLUMNS + ("file_row_number", "_quayside_file")


class SpecError(ValueError):
    """A dataset spec is invalid; the message names the file and the field."""


def check_identifier(value: str, what: str = "identifier") -> str:
    """Identifiers become table, namespace and column names: keep them SQL-safe everywhere."""
    if not isinstance(value, str) or not IDENTIFIER.match(value):
        raise ValueError(f"{what} {value!r} must match {IDENTIFIER.pattern} (lowercase letters, digits, _)")
    return value


def sql_literal(value: object) -> str:
    """A value from data or config as a SQL literal (numbers as they are, anything else quoted)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    return "'" + str(value).replace("'", "''") + "'"


def check_relative_path(value: str, what: str = "path") -> str:
    """A relative POSIX path inside a zone: no absolute paths, no '..', no backslashes or NULs."""
    if not value:
        return value
    if "\\" in value or "\x00" in value or value.startswith("/") or re.match(r"^[A-Za-z]:", value):
        raise ValueError(f"{what} {value!r} must be a relative POSIX path")
    if any(part in ("..", ".") for part in value.split("/")):
        raise ValueError(f"{what} {value!r} must not contain '.' or '..' segments")
    return value


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CsvOptions(_Model):
    delimiter: str = ","
    quote_char: str = '"'
    header: bool = True
    encoding: Literal["utf-8", "latin-1", "utf-16"] = "utf-8"
    null_values: list[str] = Field(default_factory=lambda: [""])


class TableExtract(_Model):
    """Read a table of a `database` connection: pages ordered by a key (each page one short
    query), a full load the first time, then rows past the watermark."""

    table: str = Field(description="'schema.table' or 'table'")
    watermark: str | None = Field(None, description="column that grows when a row changes, e.g. updated_at")
    tie_breaker: list[str] = Field(default_factory=list, description="unique key ordering rows of one watermark value; "
                                                                     "default: the primary key")
    page_rows: Annotated[int, Field(gt=0)] = 50_000

    @field_validator("table")
    @classmethod
    def _table(cls, v: str) -> str:
        parts = v.split(".")
        if len(parts) > 2:
            raise ValueError(f"table {v!r} must be 'schema.table' or 'table'")
        for part in parts:
            check_identifier(part, "table name part")
        return v


class ApiExtract(_Model):
    """Pull JSON records from an `http_api` connection, page by page."""

    path: str = Field(description="path under the connection's base_url, e.g. 'v1/cases'")
    params: dict[str, str] = Field(default_factory=dict)
    records: str = Field("", description="dotted path to the list of records in a response; '' = the response is it")
    pagination: Literal["none", "page", "cursor", "link"] = "none"
    page_param: str = "page"
    page_size_param: str = ""
    page_size: Annotated[int, Field(gt=0, description="records per page (sent as page_size_param if given); "
                                                     "a shorter page is the last")] = 100
    cursor_param: str = "cursor"
    next_cursor: str = Field("next_cursor", description="dotted path to the next page's cursor in a response")
    incremental_param: str = Field("", description="query parameter taking the watermark, e.g. updated_since")
    incremental_field: str = Field("", description="record field whose largest value is the next watermark")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if "://" in v or "?" in v or "#" in v:
            raise ValueError(f"path {v!r} must be a path under the connection's base_url (query goes in params)")
        return check_relative_path(v.strip("/"), "path")

    @model_validator(mode="after")
    def _incremental(self) -> ApiExtract:
        if bool(self.incremental_param) != bool(self.incremental_field):
            raise ValueError("incremental_param and incremental_field go together")
        return self


# Files an extraction writes into landing: LOAD<stamp> for a full load (as AWS DMS names them),
# <stamp>-changes for an incremental one.
EXTRACT_PATTERN = r"(LOAD)?\d{20}(-changes)?\.{suffix}"


class Source(_Model):
    connection: str = "landing"
    location: str = Field(description="prefix under the connection (or, for table/api sources, in landing), "
                                      "e.g. 'prisons/population/'")
    pattern: str = Field("", description="regex a file name must match; an optional group 'date' (YYYY-MM-DD) "
                                         "sets the batch date")
    format: Literal["csv", "jsonl", "parquet"] | None = None
    csv: CsvOptions = Field(default_factory=CsvOptions)
    after_ingest: Literal["keep", "delete", "archive"] = "keep"
    table: TableExtract | None = None
    api: ApiExtract | None = None

    @field_validator("connection")
    @classmethod
    def _connection(cls, v: str) -> str:
        return check_identifier(v, "connection")

    @field_validator("location")
    @classmethod
    def _location(cls, v: str) -> str:
        return check_relative_path(v, "location")

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        try:
            compiled = re.compile(v)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        if set(compiled.groupindex) - {"date"}:
            raise ValueError("the only named group allowed is 'date'")
        return v

    @model_validator(mode="after")
    def _kind(self) -> Source:
        if self.table and self.api:
            raise ValueError("a source reads a table or an api, not both")
        if self.table or self.api:
            # An extraction writes the files itself: their names and format are Quayside's.
            fmt = "parquet" if self.table else "jsonl"
            if self.pattern or self.format not in (None, fmt):
                raise ValueError(f"a {'table' if self.table else 'api'} source writes {fmt} files named by Quayside: "
                                 "leave out pattern and format")
            object.__setattr__(self, "format", fmt)
            object.__setattr__(self, "pattern", EXTRACT_PATTERN.replace("{suffix}", fmt))
            if self.connection == "landing":
                raise ValueError("a table or api source needs a connection")
        elif not self.pattern or not self.format:
            raise ValueError("a file source needs a pattern and a format")
        return self

    @property
    def extracted(self) -> bool:
        return self.table is not None or self.api is not None

    def matches(self, file_name: str) -> re.Match[str] | None:
        return re.fullmatch(self.pattern, file_name)


class Column(_Model):
    name: str
    type: str
    nullable: bool = True
    description: str = ""
    pii: bool = False
    enum: list[str] | None = None
    pattern: str | None = None
    min: float | int | date | None = None
    max: float | int | date | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        check_identifier(v, "column name")
        if v in LINEAGE_COLUMNS:
            raise ValueError(f"{v!r} is a lineage column Quayside adds itself")
        return v

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        v = v.strip().lower()
        if v in COLUMN_TYPES:
            return v
        m = DECIMAL_TYPE.match(v)
        if m and 0 < int(m.group(1)) <= 38 and int(m.group(2)) <= int(m.group(1)):
            return f"decimal({m.group(1)},{m.group(2)})"
        raise ValueError(f"unknown type {v!r}; use one of {', '.join(COLUMN_TYPES)} or decimal(p,s)")

    @field_validator("pattern")
    @classmethod
    def _regex(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return v

    @model_validator(mode="after")
    def _rules_fit_type(self) -> Column:
        if (self.enum is not None or self.pattern is not None) and self.type != "string":
            raise ValueError("enum and pattern apply to string columns only")
        if (self.min is not None or self.max is not None) and self.type in ("string", "bool"):
            raise ValueError("min and max apply to numeric and date columns only")
        return self


class Partitioning(_Model):
    column: str
    granularity: Literal["day", "month"] = "day"
    start: date = Field(description="first daily batch of the Dagster partitions")


class Freshness(_Model):
    warn_after_hours: float | None = None
    fail_after_hours: float
    # Daily-partitioned datasets: by when (cron, UTC) the previous batch must have landed.
    # Default: each day at hour fail_after_hours % 24, i.e. fail_after_hours after the batch day began.
    deadline_cron: str | None = None

    @field_validator("deadline_cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is not None and len(v.split()) != 5:
            raise ValueError("deadline_cron must be a five-field cron expression, e.g. '0 9 * * *'")
        return v

    @property
    def deadline(self) -> str:
        return self.deadline_cron or f"0 {int(self.fail_after_hours) % 24} * * *"

    @model_validator(mode="after")
    def _order(self) -> Freshness:
        if self.warn_after_hours is not None and self.warn_after_hours >= self.fail_after_hours:
            raise ValueError("warn_after_hours must be less than fail_after_hours")
        return self


class Cdc(_Model):
    """How AWS DMS (or a DMS-like tool) marks changes in its output files."""

    op_column: str = "Op"
    timestamp_column: str = "extraction_timestamp"
    sequence_column: str | None = None
    full_load_pattern: str = r"LOAD\d+.*"


class DatasetSpec(_Model):
    name: str
    domain: str
    description: str
    owner: str
    source: Source
    columns: Annotated[list[Column], Field(min_length=1)]
    primary_key: list[str] = Field(default_factory=list)
    partitioning: Partitioning | None = None
    load_mode: Literal["append", "snapshot", "cdc"] = "append"
    schema_drift: Literal["evolve", "quarantine"] = "quarantine"
    freshness: Freshness | None = None
    cdc: Cdc | None = None

    @field_validator("name", "domain")
    @classmethod
    def _ids(cls, v: str) -> str:
        return check_identifier(v)

    @field_validator("owner")
    @classmethod
    def _owner(cls, v: str) -> str:
        # Dagster owners are e-mail addresses or "team:<name>".
        if not (re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", v) or re.fullmatch(r"team:[A-Za-z0-9_-]+", v)):
            raise ValueError("owner must be an e-mail address or 'team:<name>'")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate column names in {names}")
        by_name = {c.name: c for c in self.columns}
        for key in self.primary_key:
            if key not in by_name:
                raise ValueError(f"primary_key column {key!r} is not declared in columns")
        if self.partitioning:
            col = by_name.get(self.partitioning.column)
            if col is None:
                raise ValueError(f"partitioning column {self.partitioning.column!r} is not declared in columns")
            if col.type not in ("date", "timestamp", "timestamptz"):
                raise ValueError("partitioning column must be a date or timestamp")
        if self.source.extracted and self.daily_partitioned:
            raise ValueError("a table or api source is read by extractions, not by day: use load_mode cdc or "
                             "snapshot, or drop partitioning")
        incremental = (self.source.table and self.source.table.watermark) or (
            self.source.api and self.source.api.incremental_param)
        if self.load_mode == "snapshot" and incremental:
            raise ValueError("a snapshot dataset reads its whole source each time: drop the watermark / incremental_param")
        if self.source.table:
            extract = self.source.table
            for col in [extract.watermark, *extract.tie_breaker]:
                if col is not None and col not in by_name:
                    raise ValueError(f"source.table column {col!r} is not declared in columns")
            if not (extract.tie_breaker or self.primary_key):
                raise ValueError("a table source pages by a unique key: give primary_key or source.table.tie_breaker")
        if self.load_mode == "cdc":
            if not self.primary_key:
                raise ValueError("load_mode cdc needs a primary_key")
            clash = sorted(set(names) & set(CDC_RESERVED_COLUMNS))
            if clash:
                raise ValueError(f"columns {clash} are reserved in CDC datasets (the history table's SCD2 columns "
                                 "and the merge's row positions)")
            if self.cdc is None:
                object.__setattr__(self, "cdc", Cdc())
        elif self.cdc is not None:
            raise ValueError("cdc settings are only allowed with load_mode: cdc")
        return self

    # --- names used across the lake -------------------------------------------------
    @property
    def key(self) -> str:
        return f"{self.domain}.{self.name}"

    @property
    def staged_namespace(self) -> str:
        return f"staged_{self.domain}"

    @property
    def history_table(self) -> str:
        return f"{self.name}_history"

    @property
    def daily_partitioned(self) -> bool:
        """Append datasets with partitioning run one Dagster partition per daily batch."""
        return self.load_mode == "append" and self.partitioning is not None

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


def _format_error(path: Path, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ""
        for part in err["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        lines.append(f"{path}: {loc or '<spec>'}: {err['msg']}")
    return "\n".join(lines)


def load_spec(path: Path) -> DatasetSpec:
    try:
        # libyaml's safe loader: the same documents, several times faster (a code location loads every spec)
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=yaml.CSafeLoader)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: <spec>: expected a mapping of fields, got {type(raw).__name__}")
    try:
        spec = DatasetSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_format_error(path, exc)) from None
    if path.stem != spec.name or path.parent.name != spec.domain:
        raise SpecError(f"{path}: name: a spec lives at <domain>/<name>.yaml; expected {spec.domain}/{spec.name}.yaml")
    return spec


def load_specs(folder: Path) -> list[DatasetSpec]:
    """Load every ``<domain>/<dataset>.yaml`` under ``folder``; all errors are reported together."""
    specs, errors = [], []
    for path in sorted(folder.glob("*/*.yaml")):
        try:
            specs.append(load_spec(path))
        except SpecError as exc:
            errors.append(str(exc))
    if errors:
        raise SpecError("\n".join(errors))
    return specs
