"""Benchmark: apply a DMS change batch to a large staged CDC table with `quayside.cdc.apply_changes`.

    .venv/bin/python benchmarks/cdc_merge.py                      # 5M rows, 100k changes, skewed + uniform
    .venv/bin/python benchmarks/cdc_merge.py --quick              # 200k rows, 10k changes, 1 run
    .venv/bin/python benchmarks/cdc_merge.py --with-upsert        # also pyiceberg upsert (slow)
    .venv/bin/python benchmarks/cdc_merge.py --scaling            # skewed 100k changes at 1M vs 5M rows

The table: `id` (primary key, grows with `created_date`), `created_date` (partition by month,
~5 years), `status`, `amount`, `updated_at`; history holds one version per row. Changes are
~70% U, 20% I (new keys, created today), 10% D. 'skewed': 90% (`--recent-share`) of U/D hit
rows created in the last 60 days, the rest any row; 'uniform': any row. Each run starts from the same baseline:
the SQLite catalog is restored, so the tables point at the baseline snapshot again.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from quayside.cdc import CdcResult, apply_changes  # noqa: E402
from quayside.lake import Lake, LakeSettings  # noqa: E402
from quayside.specs import DatasetSpec  # noqa: E402

START = date(2021, 1, 1)
DAYS = 5 * 365
RECENT_DAYS = 60
STATUSES = np.array(["open", "pending", "closed", "cancelled", "on_hold"])
INGESTED = datetime(2026, 1, 2, tzinfo=timezone.utc)

SPEC = DatasetSpec.model_validate({
    "name": "orders", "domain": "bench", "description": "benchmark table", "owner": "team:bench",
    "source": {"location": "bench/orders/", "pattern": r".*\.parquet", "format": "parquet"},
    "columns": [{"name": "id", "type": "int"}, {"name": "created_date", "type": "date"},
                {"name": "status", "type": "string"}, {"name": "amount", "type": "float"},
                {"name": "updated_at", "type": "timestamp"}],
    "primary_key": ["id"],
    "partitioning": {"column": "created_date", "granularity": "month", "start": START.isoformat()},
    "load_mode": "cdc",
})


# --- data -----------------------------------------------------------------------------
def created_date_of(ids: np.ndarray, rows: int) -> np.ndarray:
    """Ids grow with creation date, as auto-increment keys do: the date is a function of the id."""
    day = np.minimum(ids, rows - 1) * DAYS // rows
    return (np.datetime64(START) + day.astype("timedelta64[D]")).astype("datetime64[D]")


def change_table(ids: np.ndarray, created: np.ndarray, ops: np.ndarray, cdc_ts: np.ndarray,
                 seq: list[str] | None, source: str, rng: np.random.Generator) -> pa.Table:
    n = len(ids)
    updated = cdc_ts.astype("datetime64[us]")
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "created_date": pa.array(created, pa.date32()),
        "status": pa.array(STATUSES[rng.integers(0, len(STATUSES), n)], pa.string()),
        "amount": pa.array(np.round(rng.random(n) * 1000, 2), pa.float64()),
        "updated_at": pa.array(updated, pa.timestamp("us")),
        "_source_file": pa.array([source] * n, pa.string()),
        "_batch_date": pa.array([INGESTED.date()] * n, pa.date32()),
        "_ingested_at": pa.array([INGESTED] * n, pa.timestamp("us", tz="UTC")),
        "_op": pa.array(ops, pa.string()),
        "_cdc_ts": pa.array(updated, pa.timestamp("us")),
        "_cdc_seq": pa.array(seq, pa.string()) if seq is not None else pa.nulls(n, pa.string()),
    })


def baseline_rows(rows: int, rng: np.random.Generator) -> pa.Table:
    ids = np.arange(rows, dtype=np.int64)
    created = created_date_of(ids, rows)
    ts = created.astype("datetime64[us]") + rng.integers(0, 86_400_000_000, rows).astype("timedelta64[us]")
    return change_table(ids, created, np.full(rows, "I"), ts, None, "LOAD00000001.parquet", rng)


def make_changes(rows: int, count: int, distribution: str, recent_share: float, rng: np.random.Generator) -> pa.Table:
    inserts = count * 20 // 100
    hits = count - inserts
    if distribution == "skewed":
        recent_from = rows * (DAYS - RECENT_DAYS) // DAYS
        recent = rng.random(hits) < recent_share
        targets = np.where(recent, rng.integers(recent_from, rows, hits), rng.integers(0, rows, hits))
    else:
        targets = rng.integers(0, rows, hits)
    ops = np.where(rng.random(hits) < 70 / 80, "U", "D")
    new_ids = np.arange(rows, rows + inserts, dtype=np.int64)
    ids = np.concatenate([targets, new_ids])
    today = np.datetime64(START + timedelta(DAYS - 1))
    created = np.concatenate([created_date_of(targets, rows), np.full(inserts, today)])
    all_ops = np.concatenate([ops, np.full(inserts, "I")])
    after = np.datetime64(START + timedelta(DAYS), "us")
    cdc_ts = after + rng.integers(0, 86_400_000_000, count).astype("timedelta64[us]")
    seq = [f"{i:020d}" for i in range(count)]
    return change_table(ids, created, all_ops, cdc_ts, seq, "cdc/20260102-000001.parquet", rng)


# --- lakes ----------------------------------------------------------------------------
class Baseline:
    """A lake holding the tables at N rows; `reset` puts them back to that state."""

    def __init__(self, root: Path, rows: int, rng: np.random.Generator):
        self.home = root / f"lake-{rows}"
        started = time.perf_counter()
        apply_changes(self.lake(), SPEC, baseline_rows(rows, rng), full_load=True)
        shutil.copy(self.home / "catalog.db", self.home / "catalog.baseline.db")
        print(f"  baseline {rows:,} rows built in {time.perf_counter() - started:.1f} s", flush=True)

    def lake(self) -> Lake:
        return Lake(LakeSettings(home=str(self.home)))

    def reset(self) -> Lake:
        shutil.copy(self.home / "catalog.baseline.db", self.home / "catalog.db")
        return self.lake()


def time_apply(base: Baseline, changes: pa.Table, runs: int) -> tuple[float, CdcResult]:
    """Median seconds over `runs`, each from the baseline, and the (same every run) result."""
    times = []
    for _ in range(runs):
        lake = base.reset()
        started = time.perf_counter()
        result = apply_changes(lake, SPEC, changes, full_load=False)
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def time_upsert(base: Baseline, changes: pa.Table) -> float:
    """The peer: pyiceberg upsert of each key's latest I/U version, plus a delete of the deleted keys."""
    from pyiceberg.expressions import In

    lake = base.reset()
    table = lake.load_table(SPEC.staged_namespace, SPEC.name)
    order = pc.sort_indices(changes, [("id", "ascending"), ("_cdc_ts", "descending"), ("_cdc_seq", "descending")])
    ordered = changes.take(order)
    first = pc.not_equal(ordered["id"], pa.concat_arrays([pa.array([-1], pa.int64()),
                                                           ordered["id"].combine_chunks()[:-1]]))
    latest = ordered.filter(first)
    deletes = pc.equal(latest["_op"], "D")
    upserts = latest.filter(pc.invert(deletes)).select(table.schema().column_names).cast(table.schema().as_arrow())
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table.upsert(upserts, join_cols=["id"])
        table.delete(In("id", latest.filter(deletes)["id"].to_pylist()))
    return time.perf_counter() - started


# --- main -----------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--changes", type=int, default=100_000)
    parser.add_argument("--distribution", choices=["skewed", "uniform", "both"], default="both")
    parser.add_argument("--runs", type=int, default=3, help="median of this many runs")
    parser.add_argument("--quick", action="store_true", help="200k rows, 10k changes, one run")
    parser.add_argument("--with-upsert", action="store_true", help="also time pyiceberg upsert (slow)")
    parser.add_argument("--scaling", action="store_true", help="skewed changes at each of --scaling-rows")
    parser.add_argument("--scaling-rows", default="1000000,5000000", help="table sizes for --scaling")
    parser.add_argument("--recent-share", type=float, default=0.9, help="skewed: share of U/D hitting recent rows")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.changes, args.runs = 200_000, 10_000, 1
    distributions = ["skewed", "uniform"] if args.distribution == "both" else [args.distribution]
    rng = np.random.default_rng(42)
    with tempfile.TemporaryDirectory(prefix="cdc-bench-") as tmp:
        results = []
        if not args.scaling:
            base = Baseline(Path(tmp), args.rows, rng)
            for distribution in distributions:
                changes = make_changes(args.rows, args.changes, distribution, args.recent_share, rng)
                merge, result = time_apply(base, changes, args.runs)
                upsert = time_upsert(base, changes) if args.with_upsert else None
                results.append((args.rows, args.changes, distribution, result.partitions_touched, merge, upsert))
                print(f"  {distribution}: apply_changes {merge:.2f} s", flush=True)
        else:
            for rows in [int(r) for r in args.scaling_rows.split(",")]:
                base = Baseline(Path(tmp), rows, rng)
                changes = make_changes(rows, args.changes, "skewed", args.recent_share, rng)
                merge, result = time_apply(base, changes, args.runs)
                results.append((rows, args.changes, "skewed", result.partitions_touched, merge, None))
                print(f"  {rows:,} rows: apply_changes {merge:.2f} s", flush=True)
                shutil.rmtree(base.home)
    print_results(results, args.runs)


def print_results(results: list[tuple], runs: int) -> None:
    print(f"\n{'rows':>12} {'changes':>9} {'distribution':>12} {'partitions':>10} {'apply_changes':>14} "
          f"{'upsert':>9} {'ratio':>7}")
    for rows, changes, distribution, partitions, merge, upsert in results:
        peer = f"{upsert:8.2f}s" if upsert is not None else f"{'-':>9}"
        ratio = f"{upsert / merge:6.1f}x" if upsert is not None else f"{'-':>7}"
        print(f"{rows:>12,} {changes:>9,} {distribution:>12} {partitions:>10} {merge:>13.2f}s {peer} {ratio}")
    if len({r[0] for r in results}) > 1:
        print(f"largest / smallest table: {results[-1][4] / results[0][4]:.2f}x the time")
    print(f"(partitions: monthly partitions rewritten, of {DAYS // 365 * 12}; apply_changes: median of {runs} runs, "
          "history + current; upsert: one run, current table only, includes deleting the D keys)")


if __name__ == "__main__":
    main()
