"""Extractions: a database table or an HTTP API read into one file in landing, then landed like
any delivered file (`ingest.land`), so raw, checksums, staging and quarantine work unchanged.

An extraction never holds what it reads in memory: pages go to a local temporary file, which
is written into landing (atomically) only once the read has finished, so a failed read leaves
nothing behind. Each extraction is recorded in `raw.extracts` with the watermark it reached and
the next one continues from there. The record is written after the landing file: a crash in
between re-reads from the old watermark, and the repeated versions are dropped by staging.

For CDC datasets the file carries the change columns DMS would (`Op` = 'U' for an incremental
read, which cannot tell inserts from updates; a timestamp column = the row's watermark), and a
full load is named LOAD…, so staging keeps SCD2 history and closes keys a full load lacks.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Protocol

import pyarrow as pa
from pyiceberg.expressions import EqualTo

from quayside.ingest import SYSTEM_NAMESPACE_TABLES, read_system, retry_commit, system_table
from quayside.lake import Lake
from quayside.specs import DatasetSpec


class ExtractError(Exception):
    """An extraction failed; nothing was written to landing and the watermark did not move."""


@dataclass
class Extraction:
    dataset: str
    full_load: bool
    rows: int
    pages: int
    started_at: datetime
    seconds: float = 0.0
    source_seconds: float = 0.0  # time spent in source queries/requests
    longest_transaction_seconds: float = 0.0  # the longest single source query (databases)
    watermark: list | None = None  # where the next extraction continues; None: nothing to continue from
    landing_key: str | None = None  # None when there was nothing to write
    bytes: int = 0

    def record(self, run_id: str) -> dict:
        return {"dataset": self.dataset, "landing_key": self.landing_key or "", "full_load": self.full_load,
                "rows": self.rows, "pages": self.pages, "bytes": self.bytes,
                "watermark": None if self.watermark is None else json.dumps(self.watermark, default=_json_value),
                "started_at": self.started_at, "seconds": self.seconds, "source_seconds": self.source_seconds,
                "run_id": run_id}


class Extractor(Protocol):
    """What a table or API connection offers a dataset (quayside.database, quayside.http_api)."""

    def extract(self, lake: Lake, spec: DatasetSpec, full_load: bool = False, run_id: str = "") -> Extraction: ...

    def probe(self, lake: Lake, spec: DatasetSpec) -> str | None:
        """A token naming what is new at the source, or None if nothing is."""


def _json_value(value: object) -> str:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"cannot keep {type(value).__name__} in a watermark")


def last_extraction(lake: Lake, spec: DatasetSpec) -> dict | None:
    """The dataset's latest recorded extraction (its `watermark` JSON-decoded), or None if none ran."""
    rows = read_system(lake, "raw", "extracts", EqualTo("dataset", spec.key)).to_pylist()
    if not rows:
        return None
    latest = max(rows, key=lambda r: r["started_at"])
    return latest | {"watermark": None if latest["watermark"] is None else json.loads(latest["watermark"])}


def landing_key(spec: DatasetSpec, full_load: bool, started: datetime) -> str:
    stamp = started.strftime("%Y%m%d%H%M%S%f")
    name = f"LOAD{stamp}" if full_load else f"{stamp}-changes"
    return f"{spec.source.location.rstrip('/')}/{name}.{spec.source.format}".lstrip("/")


@contextmanager
def scratch_file(suffix: str) -> Iterator[Path]:
    """A local temporary file for one extraction, removed afterwards whatever happens."""
    fd, name = tempfile.mkstemp(prefix="quayside-extract-", suffix=suffix)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def finish(lake: Lake, spec: DatasetSpec, extraction: Extraction, scratch: Path, run_id: str) -> Extraction:
    """Put the finished file into landing (if it holds rows) and record the extraction."""
    if extraction.rows:
        key = landing_key(spec, extraction.full_load, extraction.started_at)
        with scratch.open("rb") as f:
            _, extraction.bytes = lake.landing.write(key, f)
        extraction.landing_key = key
    extraction.seconds = (datetime.now(timezone.utc) - extraction.started_at).total_seconds()
    record = pa.Table.from_pylist([extraction.record(run_id)], schema=SYSTEM_NAMESPACE_TABLES[("raw", "extracts")])
    retry_commit(lambda: system_table(lake, "raw", "extracts").append(record))
    return extraction


def change_columns(spec: DatasetSpec, full_load: bool) -> list[tuple[str, pa.DataType]]:
    """The DMS-style columns a CDC dataset's extracted file carries (none for other load modes)."""
    if spec.load_mode != "cdc":
        return []
    columns = [(spec.cdc.timestamp_column, pa.timestamp("us"))]
    return columns if full_load else [(spec.cdc.op_column, pa.string())] + columns

