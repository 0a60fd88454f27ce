"""Scenario 8: table maintenance — many small appends, then compaction + snapshot expiry.

500 appends of 1,000 rows (one day each, a month-partitioned table: ~30 small files a partition)
through Quayside's append path (`write_slices` + one fast-append commit each, as staging writes),
timing each commit. Then `quayside.maintenance.maintain_table` (compaction + snapshot expiry;
the retention is set to 0 because every snapshot here is seconds old). Quayside: the maintained
table. Peer: the same table with no maintenance (its pre-maintenance metadata file, still intact
on disk: orphan files are only removed after 3 days). Limit: the same 500k rows in a single
append. Scans are DuckDB `iceberg_scan` aggregates (the lake's query path) and pyiceberg
`to_arrow`; commit latency after maintenance is measured on 50 more appends, against the last 50
appends of the unmaintained table.
"""

from __future__ import annotations

import statistics
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from benchmarks.harness import Row, compare, run_child
from quayside.maintenance import DEFAULTS

NAMESPACE = "staged_bench"
SCHEMA = pa.schema([("id", pa.int64()), ("event_date", pa.date32()), ("category", pa.string()),
                    ("amount", pa.float64())])
START = date(2025, 1, 1)
LATER_APPENDS = 50
SCAN_REPEATS = 5
HERE = "benchmarks.scenarios.table_maintenance"


def batch(number: int, rows: int) -> pa.Table:
    """Append number `number`: `rows` rows of one day."""
    rng = np.random.default_rng(number)
    return pa.table({"id": np.arange(number * rows, (number + 1) * rows, dtype=np.int64),
                     "event_date": pa.array([START + timedelta(days=number)] * rows, pa.date32()),
                     "category": pa.array(np.array(list("abcdefghij"))[rng.integers(0, 10, rows)]),
                     "amount": rng.random(rows) * 100}, schema=SCHEMA)


def _lake(home: str):
    from quayside.lake import Lake, LakeSettings

    return Lake(LakeSettings(home=home))


def _append(lake, name: str, data: pa.Table) -> float:
    """Quayside's append path; returns the commit's seconds (files are written before)."""
    from quayside.iceberg_files import append_files, partition_slices, write_slices

    table = lake.load_table(NAMESPACE, name)
    files = write_slices(table, partition_slices(table, data))
    started = time.perf_counter()
    append_files(table, files)
    return time.perf_counter() - started


def _percentiles(latencies: list[float]) -> dict:
    return {"p50": float(np.percentile(latencies, 50)), "p95": float(np.percentile(latencies, 95))}


# --- steps and contenders (each in a process of its own) ------------------------------------
def build(clock, home: str, appends: int, rows: int) -> dict:
    """The table of many small appends (commit latencies timed) and the limit's single-append table."""
    lake = _lake(home)
    for name in ("events", "events_single"):
        lake.create_table(NAMESPACE, name, SCHEMA, ("event_date", "month"))
    clock.start()
    latencies = [_append(lake, "events", batch(i, rows)) for i in range(appends)]
    single_seconds = _append(lake, "events_single", pa.concat_tables([batch(i, rows) for i in range(appends)]))
    single = lake.load_table(NAMESPACE, "events_single")
    return {"latencies": latencies, **_percentiles(latencies), "tail_p95": _percentiles(latencies[-LATER_APPENDS:])["p95"],
            "metadata": lake.load_table(NAMESPACE, "events").metadata_location,
            "single_metadata": single.metadata_location, "single_files": len(list(single.scan().plan_files())),
            "single_commit_seconds": single_seconds}


def maintain(clock, home: str) -> dict:
    from quayside.maintenance import MaintenanceSettings, maintain_table

    lake = _lake(home)
    clock.start()
    result = maintain_table(lake, NAMESPACE, "events", MaintenanceSettings(snapshot_retention=timedelta(0)))
    return {"files_before": result.data_files_before, "files_after": result.data_files_after,
            "snapshots_before": result.snapshots_before, "snapshots_expired": result.snapshots_expired,
            "metadata": lake.load_table(NAMESPACE, "events").metadata_location}


def later_appends(clock, home: str, first: int, rows: int) -> dict:
    lake = _lake(home)
    clock.start()
    return _percentiles([_append(lake, "events", batch(first + i, rows)) for i in range(LATER_APPENDS)])


def scan(clock, metadata: str) -> dict:
    """Full scans of one table state: a DuckDB aggregate and a pyiceberg read, best of a few."""
    import duckdb
    from pyiceberg.table import StaticTable

    from quayside.lake import load_extensions

    con = duckdb.connect()
    load_extensions(con)
    clock.start()
    duck, arrow = [], []
    for _ in range(SCAN_REPEATS):
        started = time.perf_counter()
        rows, total = con.sql(f"SELECT count(*), sum(amount) FROM iceberg_scan('{metadata}')").fetchone()
        duck.append(time.perf_counter() - started)
        started = time.perf_counter()
        StaticTable.from_metadata(metadata).scan().to_arrow()
        arrow.append(time.perf_counter() - started)
    return {"duckdb_scan": statistics.median(duck), "pyiceberg_scan": statistics.median(arrow), "rows": rows}


# --- the scenario --------------------------------------------------------------------------
def run(data: Path, work: Path, quick: bool, repetitions: int) -> dict:
    appends, rows = (30, 100) if quick else (500, 1000)
    home = str(work / "s8")
    print(f"  {appends} appends of {rows:,} rows", flush=True)
    built = run_child(f"{HERE}:build", home=home, appends=appends, rows=rows)
    print(f"    appends: commit p50 {built.extra['p50'] * 1000:.0f} ms, p95 {built.extra['p95'] * 1000:.0f} ms",
          flush=True)
    maintained = run_child(f"{HERE}:maintain", home=home)
    print(f"    maintenance {maintained.seconds:.2f} s: files {maintained.extra['files_before']} -> "
          f"{maintained.extra['files_after']}, snapshots expired {maintained.extra['snapshots_expired']}", flush=True)
    scans = compare({"quayside": (f"{HERE}:scan", {"metadata": maintained.extra["metadata"]}),
                     "no_maintenance": (f"{HERE}:scan", {"metadata": built.extra["metadata"]}),
                     "limit": (f"{HERE}:scan", {"metadata": built.extra["single_metadata"]})}, repetitions)
    later = run_child(f"{HERE}:later_appends", home=home, first=appends, rows=rows)
    return {"appends": appends, "rows": rows, "built": built.extra, "maintenance": maintained.extra | {"seconds": maintained.seconds},
            "later": later.extra, "scans": {name: figures.extra for name, figures in scans.items()}}


def report(result: dict, plots: Path) -> list[Row]:
    from lake_assets.metadata import new_figure

    built, later, scans, m = result["built"], result["later"], result["scans"], result["maintenance"]
    duck = {name: s["duckdb_scan"] for name, s in scans.items()}
    arrow = {name: s["pyiceberg_scan"] for name, s in scans.items()}
    scan_ratio = duck["quayside"] / duck["limit"]
    met = scan_ratio <= 1.5 and later["p95"] < 0.150
    total = result["appends"] * result["rows"]
    fig, ax = new_figure()
    ax.plot(np.arange(1, len(built["latencies"]) + 1), np.array(built["latencies"]) * 1000, lw=0.8,
            label="append commits, no maintenance")
    ax.axhline(later["p95"] * 1000, color="#d8573b", ls="--", label="p95 after maintenance")
    ax.set(xlabel="append number", ylabel="commit ms", title="Scenario 8: commit latency vs snapshots")
    ax.legend(fontsize=7)
    fig.savefig(plots / "s8_commit_latency.png", dpi=110, bbox_inches="tight")
    return [Row(
        "8", f"maintenance: {result['appends']} appends of {result['rows']:,} rows, then compaction + expiry",
        f"maintained: scan {duck['quayside'] * 1000:.0f} ms (DuckDB) / {arrow['quayside'] * 1000:.0f} ms "
        f"(pyiceberg), {m['files_after']} files; commit p95 after {later['p95'] * 1000:.0f} ms; "
        f"maintenance {m['seconds']:.1f} s",
        f"no maintenance: scan {duck['no_maintenance'] * 1000:.0f} / {arrow['no_maintenance'] * 1000:.0f} ms, "
        f"{m['files_before']} files; commit p50/p95 {built['p50'] * 1000:.0f}/{built['p95'] * 1000:.0f} ms "
        f"(last {LATER_APPENDS}: p95 {built['tail_p95'] * 1000:.0f} ms)",
        f"one {total:,}-row append: scan {duck['limit'] * 1000:.0f} / {arrow['limit'] * 1000:.0f} ms, "
        f"{built['single_files']} files, commit {built['single_commit_seconds'] * 1000:.0f} ms",
        f"scan {scan_ratio:.2f}× the limit's (unmaintained {duck['no_maintenance'] / duck['limit']:.1f}×); commit "
        f"p95 {later['p95'] * 1000:.0f} vs {built['tail_p95'] * 1000:.0f} ms unmaintained",
        "scan ≤ 1.5× the limit's and commit p95 < 150 ms after maintenance", met,
        f"{m['snapshots_expired']} snapshots expired (the newest {DEFAULTS.keep_last_snapshots} kept); scans are "
        f"medians of {SCAN_REPEATS} in each process")]
