"""Scenario 7: one 2 GB CSV file → staged Iceberg, in bounded memory.

The file is scenario 1's data (same columns, spec and rules) in one file. Quayside: `land` +
`stage`, which streams a CSV in chunks. Peer: dlt's filesystem destination with
`table_format="iceberg"`, fed the file as pyarrow's streaming reader's record batches (its
bounded-memory path: the whole file read at once would take more than 2 GB). Limit: memory — the
file's size; throughput — pyarrow's streaming reader + `ParquetWriter` (zstd).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from benchmarks.harness import Row, compare
from benchmarks.scenarios.csv_ingest import generate, record_batches

PARTS = 14  # × 1M rows of ~148 MB: ~2.1 GB


def one_file(data: Path, quick: bool) -> Path:
    """Scenario 1's generated files joined into one (header once); reused when already there."""
    parts, rows = (2, 50_000) if quick else (PARTS, 1_000_000)
    target = data / f"large-{parts}x{rows}" / "events_000.csv"  # a name the benchmark spec's pattern takes
    if target.exists():
        return target
    folder = data / "large-parts"
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    with open(partial, "wb") as out:
        for i, part in enumerate(generate(folder, parts, rows)):
            with open(part, "rb") as f:
                if i:
                    f.readline()  # the header
                shutil.copyfileobj(f, out, 16 << 20)
    partial.rename(target)
    shutil.rmtree(folder)
    return target


def limit(clock, path: str, home: str) -> dict:
    import pyarrow.parquet as pq

    os.makedirs(home, exist_ok=True)
    clock.start()
    reader, rows = record_batches(path), 0
    with pq.ParquetWriter(f"{home}/events.parquet", reader.schema, compression="zstd") as writer:
        for batch in reader:
            writer.write_batch(batch)
            rows += batch.num_rows
    return {"rows": rows}


def run(data: Path, work: Path, quick: bool, repetitions: int) -> dict:
    path = one_file(data, quick)
    homes = {name: str(work / "s7" / name) for name in ("quayside", "dlt_iceberg", "limit")}

    def reset(name: str) -> None:
        shutil.rmtree(homes[name], ignore_errors=True)

    here = "benchmarks.scenarios"
    figures = compare({
        "quayside": (f"{here}.csv_ingest:quayside", {"files": [str(path)], "home": homes["quayside"]}),
        "dlt_iceberg": (f"{here}.csv_ingest:dlt_pipeline", {"files": [str(path)], "home": homes["dlt_iceberg"],
                                                          "table_format": "iceberg", "streamed": True}),
        "limit": (f"{here}.large_csv:limit", {"path": str(path), "home": homes["limit"]}),
    }, repetitions, before_each=reset)
    for name in homes:
        reset(name)
    return {"megabytes": path.stat().st_size / 1e6, "rows": figures["limit"].extra["rows"], "figures": figures}


def report(result: dict, plots: Path) -> list[Row]:
    f, mb = result["figures"], result["megabytes"]
    speed = {name: mb / fig.seconds for name, fig in f.items()}
    rss = f["quayside"].peak_rss_mb
    vs_limit, vs_dlt = speed["quayside"] / speed["limit"], speed["quayside"] / speed["dlt_iceberg"]
    return [Row(
        "7", f"one {mb:,.0f} MB CSV file ({result['rows']:,} rows) → staged Iceberg",
        f"{rss:,.0f} MB RSS, {speed['quayside']:.1f} MB/s",
        f"dlt Iceberg (streamed batches) {f['dlt_iceberg'].peak_rss_mb:,.0f} MB RSS, {speed['dlt_iceberg']:.1f} MB/s",
        f"file {mb:,.0f} MB; pyarrow stream → Parquet {speed['limit']:.1f} MB/s, {f['limit'].peak_rss_mb:,.0f} MB RSS",
        f"RSS {rss / mb:.2f}× file, {vs_limit:.2f}× limit's MB/s, {vs_dlt:.2f}× dlt's MB/s",
        "RSS ≤ 0.5× file and < 1 GB; throughput as scenario 1 (≥ 0.7× limit, ≥ 1.4× dlt)",
        rss <= 0.5 * mb and rss < 1000 and vs_limit >= 0.7 and vs_dlt >= 1.4,
        "Quayside's figure includes the raw copy (sha256-verified) and per-row validation; "
        f"it quarantined {int(f['quayside'].extra.get('quarantined', 0))} rows",
    )]
