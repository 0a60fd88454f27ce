"""Scenario 1: CSV files → staged Iceberg (typed, validated).

Quayside: `land` (raw copy + sha256) then `stage` of an append dataset. Peer: dlt's filesystem
destination with `table_format="iceberg"`, fed Arrow tables read with pyarrow (its fastest path),
and its plain Parquet output for reference. Limit: pyarrow `read_csv` + `write_table` (zstd).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from benchmarks.harness import Row, compare

REGIONS = ["London", "South East", "South West", "Midlands", "North East", "North West", "Wales"]
CATEGORIES = [f"category_{i:02d}" for i in range(12)]
NOTES = [f"free-text note number {i} about the event, {'x' * (i % 23)}" for i in range(64)]
COLUMNS = [  # (name, spec type, pyarrow type name)
    ("event_id", "int", "int64"), ("event_date", "date", "date32"), ("event_time", "timestamp", "timestamp"),
    ("region", "string", "string"), ("category", "string", "string"), ("amount", "decimal(12,2)", "decimal"),
    ("quantity", "int", "int64"), ("reference", "string", "string"), ("note", "string", "string"),
]
SPEC = {
    "name": "events", "domain": "bench", "description": "benchmark events", "owner": "team:bench",
    "source": {"location": "bench/events/", "pattern": r"events_\d+\.csv", "format": "csv"},
    "primary_key": ["event_id"],
    "columns": [{"name": n, "type": t, "nullable": n != "note"} | (
        {"enum": REGIONS} if n == "region" else {"min": 0} if n in ("amount", "quantity") else {})
        for n, t, _ in COLUMNS],
}


def generate(folder: Path, files: int, rows_per_file: int) -> list[Path]:
    """Seeded CSV files, ~130 bytes a row; reused when already there."""
    import pyarrow as pa
    import pyarrow.csv as pv

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"events_{i:03d}.csv" for i in range(files)]
    marker = folder / f".complete-{files}x{rows_per_file}"
    if marker.exists():
        return paths
    rng = np.random.default_rng(1)
    for i, path in enumerate(paths):
        n, first = rows_per_file, i * rows_per_file
        ids = np.arange(first, first + n)
        days = rng.integers(0, 730, n)
        table = pa.table({
            "event_id": ids,
            "event_date": (np.datetime64("2024-01-01") + days.astype("timedelta64[D]")),
            "event_time": (np.datetime64("2024-01-01T00:00:00") + (days * 86400 + rng.integers(0, 86400, n))
                           .astype("timedelta64[s]")),
            "region": np.array(REGIONS)[rng.integers(0, len(REGIONS), n)],
            "category": np.array(CATEGORIES)[rng.integers(0, len(CATEGORIES), n)],
            "amount": np.char.mod("%.2f", rng.random(n) * 5000),
            "quantity": rng.integers(0, 100, n),
            "reference": np.char.add("REF-", np.char.zfill(ids.astype(str), 10)),
            "note": np.array(NOTES)[rng.integers(0, len(NOTES), n)],
        })
        pv.write_csv(table, path)
    marker.touch()
    return paths


def _csv_types():
    import pyarrow as pa

    names = {"int64": pa.int64(), "date32": pa.date32(), "timestamp": pa.timestamp("us"), "string": pa.string(),
             "decimal": pa.decimal128(12, 2)}
    return {name: names[arrow] for name, _, arrow in COLUMNS}


def quayside(clock, files: list[str], home: str) -> dict:
    from quayside import ingest
    from quayside.lake import Lake, LakeSettings
    from quayside.specs import DatasetSpec

    spec = DatasetSpec.model_validate(SPEC)
    lake = Lake(LakeSettings(home=home))
    landing = Path(lake.landing.path(spec.source.location))
    landing.mkdir(parents=True, exist_ok=True)
    for f in files:  # delivered: the files are in landing before the clock starts
        os.link(f, landing / Path(f).name)
    clock.start()
    ingest.land(lake, spec)
    report = ingest.stage(lake, spec)
    return {"rows": report.rows_staged, "quarantined": report.rows_quarantined}


def _arrow_tables(files: list[str]):
    import pyarrow.csv as pv

    options = pv.ConvertOptions(column_types=_csv_types())
    for f in files:
        yield pv.read_csv(f, convert_options=options)


def record_batches(path: str):
    """One file as pyarrow's streaming reader's batches. Its default 1 MB blocks: it reads up to 32
    blocks ahead, so larger blocks buy memory (64 MB blocks held 2 GB of a 2 GB file)."""
    import pyarrow.csv as pv

    return pv.open_csv(path, convert_options=pv.ConvertOptions(column_types=_csv_types()))


def dlt_pipeline(clock, files: list[str], home: str, table_format: str | None, streamed: bool = False) -> dict:
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    import dlt

    @dlt.resource(name="events", table_format=table_format, write_disposition="append")
    def events():
        for table in (batch for f in files for batch in record_batches(f)) if streamed else _arrow_tables(files):
            yield table

    pipeline = dlt.pipeline(pipeline_name="bench", pipelines_dir=f"{home}/pipelines", dataset_name="bench",
                            destination=dlt.destinations.filesystem(bucket_url=f"file://{home}/out"))
    clock.start()
    pipeline.run(events(), loader_file_format="parquet")
    return {"rows": pipeline.last_trace.last_normalize_info.row_counts.get("events", 0)}


def limit(clock, files: list[str], home: str) -> dict:
    import pyarrow.parquet as pq

    os.makedirs(home, exist_ok=True)
    clock.start()
    rows = 0
    for f, table in zip(files, _arrow_tables(files)):
        pq.write_table(table, f"{home}/{Path(f).stem}.parquet", compression="zstd")
        rows += table.num_rows
    return {"rows": rows}


def run(data: Path, work: Path, quick: bool, repetitions: int) -> dict:
    files = [str(p) for p in generate(data / "csv", *((2, 50_000) if quick else (8, 1_000_000)))]
    megabytes = sum(os.path.getsize(f) for f in files) / 1e6
    homes = {name: str(work / "s1" / name) for name in ("quayside", "dlt_iceberg", "dlt_parquet", "limit")}

    def reset(name: str) -> None:
        shutil.rmtree(homes[name], ignore_errors=True)

    here = "benchmarks.scenarios.csv_ingest"
    figures = compare({
        "quayside": (f"{here}:quayside", {"files": files, "home": homes["quayside"]}),
        "dlt_iceberg": (f"{here}:dlt_pipeline", {"files": files, "home": homes["dlt_iceberg"], "table_format": "iceberg"}),
        "dlt_parquet": (f"{here}:dlt_pipeline", {"files": files, "home": homes["dlt_parquet"], "table_format": None}),
        "limit": (f"{here}:limit", {"files": files, "home": homes["limit"]}),
    }, repetitions, before_each=reset)
    for name in homes:
        reset(name)
    return {"megabytes": megabytes, "rows": figures["limit"].extra["rows"], "figures": figures}


def report(result: dict, plots: Path) -> list[Row]:

    f, mb = result["figures"], result["megabytes"]
    speed = {name: mb / fig.seconds for name, fig in f.items()}
    vs_limit, vs_dlt = speed["quayside"] / speed["limit"], speed["quayside"] / speed["dlt_iceberg"]
    memory = f["quayside"].peak_rss_mb / f["dlt_iceberg"].peak_rss_mb
    return [Row(
        "1", f"{mb:,.0f} MB of CSV ({result['rows']:,} rows) → staged Iceberg",
        f"{speed['quayside']:.1f} MB/s, {f['quayside'].peak_rss_mb:,.0f} MB RSS",
        f"dlt Iceberg {speed['dlt_iceberg']:.1f} MB/s, {f['dlt_iceberg'].peak_rss_mb:,.0f} MB RSS; "
        f"dlt Parquet {speed['dlt_parquet']:.1f} MB/s",
        f"{speed['limit']:.1f} MB/s, {f['limit'].peak_rss_mb:,.0f} MB RSS",
        f"{vs_limit:.2f}× limit, {vs_dlt:.2f}× dlt, RSS {memory:.2f}× dlt",
        "≥ 0.7× limit, ≥ 1.4× dlt, RSS ≤ 0.5× dlt",
        vs_limit >= 0.7 and vs_dlt >= 1.4 and memory <= 0.5,
        "Quayside's figure includes the raw copy (sha256-verified) and per-row validation; "
        f"it quarantined {int(f['quayside'].extra.get('quarantined', 0))} rows",
    )]
