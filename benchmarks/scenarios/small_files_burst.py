"""Scenario 9: a burst of 10,000 small CSV files (10 rows each, five days) → staged Iceberg.

Quayside: the sensor's `poll` (one batch a day), then `land` and `stage` of each batch, as the five
runs it requests do. Peer: dlt's filesystem destination with `table_format="iceberg"`, fed each
file as an Arrow table read with pyarrow (as in scenario 1). Limit: pyarrow `read_csv` of each file
and one Parquet file a day (zstd).
"""

from __future__ import annotations

import os
import shutil
from datetime import date, timedelta
from pathlib import Path

from benchmarks.harness import Row, compare

DAYS = [date(2025, 3, 1) + timedelta(days=n) for n in range(5)]
ROWS_PER_FILE = 10
SPEC = {
    "name": "readings", "domain": "bench", "description": "benchmark meter readings", "owner": "team:bench",
    "source": {"location": "bench/readings/", "pattern": r"readings_(?P<date>\d{4}-\d{2}-\d{2})_\d+\.csv",
               "format": "csv"},
    "primary_key": ["reading_id"],
    "partitioning": {"column": "reading_date", "granularity": "day", "start": DAYS[0].isoformat()},
    "columns": [{"name": "reading_id", "type": "int", "nullable": False},
                {"name": "reading_date", "type": "date", "nullable": False},
                {"name": "meter", "type": "string", "nullable": False, "pattern": "^M[0-9]{5}$"},
                {"name": "kwh", "type": "decimal(10,3)", "min": 0}],
}


def generate(folder: Path, files: int) -> list[Path]:
    """`files` CSV files spread evenly over DAYS; reused when already there."""
    folder.mkdir(parents=True, exist_ok=True)
    per_day = files // len(DAYS)
    paths = [folder / f"readings_{day}_{n:05d}.csv" for day in DAYS for n in range(per_day)]
    marker = folder / f".complete-{files}"
    if marker.exists():
        return paths
    for i, path in enumerate(paths):
        day = DAYS[i // per_day]
        first = i * ROWS_PER_FILE
        path.write_text("reading_id,reading_date,meter,kwh\n" + "".join(
            f"{first + r},{day},M{(first + r) % 100_000:05d},{(first + r) % 997 / 10:.3f}\n"
            for r in range(ROWS_PER_FILE)))
    marker.touch()
    return paths


def delivered(folder: str) -> list[str]:
    """The files (passed as their folder: 10,000 paths overflow a command line)."""
    return sorted(str(p) for p in Path(folder).glob("readings_*.csv"))


def quayside(clock, folder: str, home: str) -> dict:
    from quayside import ingest, watch
    from quayside.lake import Lake, LakeSettings
    from quayside.specs import DatasetSpec

    spec = DatasetSpec.model_validate(SPEC)
    lake = Lake(LakeSettings(home=home))
    landing = Path(lake.landing.path(spec.source.location))
    landing.mkdir(parents=True, exist_ok=True)
    for f in delivered(folder):
        os.link(f, landing / Path(f).name)
    # A folder's file is taken once its size held for a tick: the first tick, before the clock, sees them.
    _, cursor, _ = watch.poll(lake, spec, watch.LandingCursor(), latest_batch=DAYS[-1])
    clock.start()
    batches, _, _ = watch.poll(lake, spec, cursor, latest_batch=DAYS[-1])
    rows = quarantined = 0
    for batch in batches:  # one run a batch, as the sensor requests them
        ingest.land(lake, spec, keys=batch.keys, run_id=str(batch.batch_date))
        report = ingest.stage(lake, spec, batch.batch_date, run_id=str(batch.batch_date))
        rows, quarantined = rows + report.rows_staged, quarantined + report.rows_quarantined
    table = lake.load_table(spec.staged_namespace, spec.name)
    return {"rows": rows, "quarantined": quarantined, "runs": len(batches),
            "data_files": len(table.inspect.files())}


def _arrow_tables(files: list[str]):
    import pyarrow as pa
    import pyarrow.csv as pv

    options = pv.ConvertOptions(column_types={"reading_id": pa.int64(), "reading_date": pa.date32(),
                                              "meter": pa.string(), "kwh": pa.decimal128(10, 3)})
    for f in files:
        yield pv.read_csv(f, convert_options=options)


def dlt_pipeline(clock, folder: str, home: str) -> dict:
    files = delivered(folder)
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    import dlt

    @dlt.resource(name="readings", table_format="iceberg", write_disposition="append")
    def readings():
        yield from _arrow_tables(files)

    pipeline = dlt.pipeline(pipeline_name="bench", pipelines_dir=f"{home}/pipelines", dataset_name="bench",
                            destination=dlt.destinations.filesystem(bucket_url=f"file://{home}/out"))
    clock.start()
    pipeline.run(readings(), loader_file_format="parquet")
    return {"rows": pipeline.last_trace.last_normalize_info.row_counts.get("readings", 0)}


def limit(clock, folder: str, home: str) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = delivered(folder)
    os.makedirs(home, exist_ok=True)
    clock.start()
    per_day = len(files) // len(DAYS)
    tables = list(_arrow_tables(files))
    for n, day in enumerate(DAYS):
        pq.write_table(pa.concat_tables(tables[n * per_day:(n + 1) * per_day]), f"{home}/{day}.parquet",
                       compression="zstd")
    return {"rows": sum(t.num_rows for t in tables)}


def run(data: Path, work: Path, quick: bool, repetitions: int) -> dict:
    files = 500 if quick else 10_000
    folder = generate(data / f"burst-{files}", files)[0].parent
    homes = {name: str(work / "s9" / name) for name in ("quayside", "dlt", "limit")}

    def reset(name: str) -> None:
        shutil.rmtree(homes[name], ignore_errors=True)

    here = "benchmarks.scenarios.small_files_burst"
    figures = compare({name: (f"{here}:{target}", {"folder": str(folder), "home": homes[name]})
                       for name, target in (("quayside", "quayside"), ("dlt", "dlt_pipeline"), ("limit", "limit"))},
                      repetitions, before_each=reset)
    for name in homes:
        reset(name)
    return {"files": files, "figures": figures}


def report(result: dict, plots: Path) -> list[Row]:
    f, files = result["figures"], result["files"]
    rate = {name: files / fig.seconds for name, fig in f.items()}
    q = f["quayside"].extra
    vs_dlt, vs_limit = rate["quayside"] / rate["dlt"], rate["quayside"] / rate["limit"]
    return [Row(
        "9", f"burst of {files:,} small CSV files ({f['limit'].extra['rows']:,.0f} rows, {len(DAYS)} days) → staged Iceberg",
        f"{rate['quayside']:,.0f} files/s in {q['runs']:.0f} runs, {q['data_files']:.0f} data files, "
        f"{f['quayside'].peak_rss_mb:,.0f} MB RSS",
        f"dlt Iceberg {rate['dlt']:,.0f} files/s, {f['dlt'].peak_rss_mb:,.0f} MB RSS",
        f"{rate['limit']:,.0f} files/s (read each file, one Parquet file a day)",
        f"{vs_limit:.2f}× limit, {vs_dlt:.2f}× dlt",
        "≥ 1× dlt, a bounded number of runs and data files", vs_dlt >= 1 and q["runs"] == len(DAYS),
        "Quayside's figure includes the sensor's poll, the raw copy of each file (sha256-verified), "
        f"per-row validation and the load records; it quarantined {q.get('quarantined', 0):.0f} rows",
    )]
