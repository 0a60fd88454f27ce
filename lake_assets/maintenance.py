"""Nightly table maintenance of the lake (`quayside.maintenance`) as a Dagster job and schedule.

An op, not an asset: maintenance changes how a table is stored, never its rows, so it must not
count as a materialisation (that would start eager downstream assets for nothing). Each staged
table's result is recorded as an observation of its asset, so the UI shows it next to the loads.
"""

import dagster as dg
from pydantic import Field

from quayside.maintenance import (DEFAULTS, MIB, MaintenanceResult, MaintenanceSettings, maintain_table,
                                  maintained_tables, parse_table_name)
from resources import LakeResource


class MaintenanceConfig(dg.Config):
    tables: list[str] = Field(default=[], description="namespace.name of the tables to maintain; empty: every "
                                                      "table of the raw, staged and quarantine zones")
    target_file_size_mb: float = DEFAULTS.target_file_size_bytes / MIB
    min_files_to_compact: int = Field(default=DEFAULTS.min_files_to_compact,
                                      description="a partition is compacted from this many small files")
    snapshot_retention_days: float = DEFAULTS.snapshot_retention.total_seconds() / 86400
    keep_last_snapshots: int = DEFAULTS.keep_last_snapshots
    orphan_min_age_days: float = Field(default=DEFAULTS.orphan_min_age.total_seconds() / 86400,
                                       description="younger unreferenced files may be a write in progress: kept")
    dry_run: bool = Field(default=False, description="report what would be done; change nothing")


def result_metadata(result: MaintenanceResult) -> dict:
    return {
        "data_files_before": result.data_files_before,
        "data_files_after": result.data_files_after,
        "data_bytes_before": result.data_bytes_before,
        "data_bytes_after": result.data_bytes_after,
        "files_compacted": result.files_compacted,
        "snapshots_expired": result.snapshots_expired,
        "orphan_files_removed": result.orphan_files_removed,
        "orphan_bytes_removed": result.orphan_bytes_removed,
        "engine": result.engine,
        "dry_run": result.dry_run,
        "seconds": round(result.seconds, 3),
    }


@dg.op(description="Compact small files, expire old snapshots and remove orphan files of the lake's tables")
def maintain_tables(context: dg.OpExecutionContext, config: MaintenanceConfig, lake: LakeResource) -> dg.Output:
    settings = MaintenanceSettings.from_units(**config.model_dump(exclude={"tables"}))
    tables = [parse_table_name(t) for t in config.tables] or maintained_tables(lake.lake)
    rows, failures = [], []
    for namespace, name in tables:
        try:
            result = maintain_table(lake.lake, namespace, name, settings)
        except Exception as exc:  # one table's problem must not stop the others' maintenance
            context.log.error(f"{namespace}.{name}: maintenance failed: {exc}")
            failures.append(f"{namespace}.{name}: {exc}")
            continue
        context.log.info(f"{result.table}: {result.data_files_before} -> {result.data_files_after} data files, "
                         f"{result.snapshots_expired} snapshot(s) expired, {result.orphan_files_removed} orphan "
                         f"file(s) removed in {result.seconds:.1f} s")
        if namespace.startswith("staged_"):  # staged_<domain>.<name> is the asset staged/<domain>/<name>
            context.log_event(dg.AssetObservation(
                asset_key=dg.AssetKey(["staged", namespace.removeprefix("staged_"), name]),
                metadata=result_metadata(result)))
        rows.append(f"| {result.table} | {result.data_files_before} | {result.data_files_after} | "
                    f"{result.snapshots_expired} | {result.orphan_files_removed} | {result.seconds:.1f} |")
    if failures:
        raise dg.Failure(f"maintenance failed for {len(failures)} of {len(tables)} table(s)",
                         metadata={"failures": dg.MetadataValue.md("\n".join(f"- {f}" for f in failures))})
    return dg.Output(len(rows), metadata={"tables": len(rows), "results": dg.MetadataValue.md(
        "| table | files before | files after | snapshots expired | orphans removed | s |\n|---|---|---|---|---|---|\n"
        + "\n".join(rows))})


@dg.job(description="Table maintenance of the lake: compaction, snapshot expiry, orphan files (Athena on aws)")
def lake_maintenance():
    maintain_tables()


# Running by default, like the catch-up schedules: unmaintained tables get slower to commit to and
# to scan with every load, and the defaults keep a week of time travel and never touch a file
# younger than 3 days. 03:00 UTC: after the night's loads, before the 06:00 catch-up runs.
lake_maintenance_schedule = dg.ScheduleDefinition(
    name="lake_maintenance_nightly", job=lake_maintenance, cron_schedule="0 3 * * *", execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Nightly maintenance of every raw, staged and quarantine table (run config: settings, tables)")

defs = dg.Definitions(jobs=[lake_maintenance], schedules=[lake_maintenance_schedule])
