"""Materialise every dataset through Dagster and print a summary (what `make run` calls).

Unpartitioned datasets run together in one run; each daily-partitioned dataset runs its whole
range of landed batches as one single-run backfill; then the Python assets and one `dbt build`
make the curated layer, and one more `dbt build` makes the daily dbt models for the whole range.
Exits non-zero if a run or a blocking check failed.
"""

import argparse
import contextlib
import sys
import time
from datetime import date
from pathlib import Path, PurePosixPath

import dagster as dg
from pyiceberg.expressions import AlwaysTrue

from lake_assets.definitions import DATASETS, build_definitions
from lake_assets.factory import partitions_for
from quayside.ingest import batch_date_of, landing_files, read_system, unmatched_landing_files
from quayside.lake import Lake, LakeSettings
from quayside.specs import DatasetSpec, load_specs

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def landed_batches(lake: Lake, spec: DatasetSpec, last_partition: str) -> list[str]:
    days = {batch_date_of(spec, PurePosixPath(f.key).name, f.modified) for f in landing_files(lake, spec)}
    manifest = read_system(lake, "raw", "manifest", AlwaysTrue())
    days |= {d for d, ds in zip(manifest["batch_date"].to_pylist(), manifest["dataset"].to_pylist()) if ds == spec.key}
    return sorted(d.isoformat() for d in days if spec.partitioning.start <= d <= date.fromisoformat(last_partition))


def plan_runs(lake: Lake, specs: list[DatasetSpec], defs: dg.Definitions) -> list[tuple[str, list[dg.AssetKey], dict]]:
    """(label, asset keys, tags) per run: ingestion, then everything downstream of the staged layer."""
    runs = []
    unpartitioned = [s for s in specs if not s.daily_partitioned]
    keys = [dg.AssetKey([zone, s.domain, n]) for s in unpartitioned for zone, n in
            [("raw", s.name), ("staged", s.name)] + ([("staged", s.history_table)] if s.load_mode == "cdc" else [])]
    if keys:
        runs.append(("unpartitioned datasets", keys, {}))
    days: list[str] = []
    for spec in (s for s in specs if s.daily_partitioned):
        last = partitions_for(spec).get_last_partition_key()
        batches = landed_batches(lake, spec, last) if last else []
        if batches:
            keys = [dg.AssetKey(["raw", spec.domain, spec.name]), dg.AssetKey(["staged", spec.domain, spec.name])]
            runs.append((f"{spec.key} {batches[0]}..{batches[-1]}", keys,
                         {RANGE_START: batches[0], RANGE_END: batches[-1]}))
            days += batches
    return runs + curated_runs(defs, days)


def curated_runs(defs: dg.Definitions, days: list[str]) -> list[tuple[str, list[dg.AssetKey], dict]]:
    """The curated layer (Python assets + one dbt build), then the daily dbt models over `days`."""
    graph = defs.resolve_asset_graph()
    downstream = sorted(k for k in graph.materializable_asset_keys if k.path[0] not in ("raw", "staged"))
    runs = [("curated layer (Python + dbt build)", [k for k in downstream if not graph.get(k).is_partitioned], {})]
    daily = [k for k in downstream if graph.get(k).is_partitioned]
    if daily and days:
        runs.append((f"daily dbt models {min(days)}..{max(days)} (one dbt build)", daily,
                     {RANGE_START: min(days), RANGE_END: max(days)}))
    return runs


class Runner:
    """Executes runs in process, one line of progress each; keeps failures and check results."""

    def __init__(self, defs: dg.Definitions, log_name: str):
        self.defs, self.instance, self.log_name = defs, dg.DagsterInstance.get(), log_name
        self.log_dir = Path(LakeSettings.from_env().home) / "logs"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.failed: list[str] = []
        self.checks: list[tuple] = []
        self.count = 0

    def run(self, label: str, keys: list[dg.AssetKey], tags: dict, run_config: dict | None = None) -> bool:
        self.count += 1
        t0 = time.perf_counter()
        print(f"▶ {label}: {len(keys)} asset(s)", flush=True)
        job = self.defs.resolve_implicit_job_def_def_for_assets(keys)
        log = self.log_dir / f"{self.log_name}-{self.count}.log"
        with log.open("w") as out, contextlib.redirect_stdout(out):  # dbt's own output: kept, not shown
            result = job.execute_in_process(instance=self.instance, asset_selection=keys, tags=tags,
                                            raise_on_error=False, run_config=QUIET | (run_config or {}))
        for evaluation in result.get_asset_check_evaluations():
            self.checks.append((evaluation.asset_key.to_user_string(), evaluation.check_name, evaluation.passed,
                                evaluation.severity.value, (evaluation.description or "")[:80]))
        status = "ok" if result.success else "FAILED"
        print(f"  {status} in {time.perf_counter() - t0:.1f}s (run {result.run_id[:8]})", flush=True)
        if not result.success:
            self.failed.append(label)
            print(f"  dbt and other tool output: {log}", flush=True)
        return result.success

    def finish(self, lake: Lake, specs: list[DatasetSpec], started: float) -> int:
        blocking_failures = print_summary(lake, specs, self.checks)
        print(f"\nmaterialised everything in {time.perf_counter() - started:.1f}s")
        if self.failed or blocking_failures:
            print(f"FAILED: runs {self.failed or 'none'}, blocking checks failed: {blocking_failures}", file=sys.stderr)
            return 1
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="materialise every Quayside dataset and print a summary")
    parser.parse_args(argv)
    started = time.perf_counter()
    lake, specs, defs = Lake(), load_specs(DATASETS), build_definitions()
    runner = Runner(defs, "make-run")
    for label, keys, tags in plan_runs(lake, specs, defs):
        runner.run(label, keys, tags)
    return runner.finish(lake, specs, started)


def print_summary(lake: Lake, specs: list[DatasetSpec], check_rows: list[tuple]) -> int:
    from quayside.cli import _print_table

    print("\n== tables ==")
    _print_table(["zone", "table", "rows"], [[t.zone, f"{t.namespace}.{t.name}", f"{t.rows:,}"] for t in lake.tables()])
    print("\n== checks ==")
    _print_table(["asset", "check", "result", "severity", "detail"],
                 [[a, c if len(c) <= 60 else c[:59] + "…", "passed" if p else "FAILED", s, d]
                  for a, c, p, s, d in sorted(check_rows)])
    passed = sum(1 for r in check_rows if r[2])
    print(f"{passed} passed, {len(check_rows) - passed} failed")
    files = read_system(lake, "quarantine", "files", AlwaysTrue())
    print(f"\n== quarantined files ({files.num_rows}) ==")
    _print_table(["dataset", "file", "reason"],
                 [[r["dataset"], PurePosixPath(r["raw_key"]).name, r["reason"].split(": ", 2)[-1][:90]]
                  for r in files.to_pylist()])
    rows = read_system(lake, "quarantine", "rows", AlwaysTrue())
    print(f"\nquarantined rows: {rows.num_rows}")
    unmatched = unmatched_landing_files(lake, specs)
    print(f"landing files matching no dataset (left in landing): {', '.join(unmatched) or 'none'}")
    return sum(1 for r in check_rows if not r[2] and r[3] == "ERROR")


if __name__ == "__main__":
    sys.exit(main())
