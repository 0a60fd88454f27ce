"""Dataset spec → Dagster definitions: raw and staged assets, checks, partitions, freshness, sensor.

Asset bodies only call the plain-Python core (`quayside.ingest`, `quayside.checks`) and turn
its reports into metadata the UI shows.
"""


from collections.abc import Callable
from datetime import date, datetime, time, timedelta

import dagster as dg
import numpy as np

from lake_assets.metadata import figure_markdown, new_figure, preview_markdown
from quayside import checks
from quayside.extract import Extraction
from quayside.iceberg_files import live_rows
from quayside.ingest import LandReport, StageReport, land, stage
from quayside.specs import DatasetSpec
from resources import LakeResource
from resources.connections import connection_keys, open_source
from sensors import run_tags
from sensors.extract import build_extract_sensor
from sensors.landing import build_landing_sensor


class LandingFiles(dg.Config):
    """Which landing files to take; empty means every matching file of the run's batch(es).
    Table and API sources extract first: incrementally, or fully with `full_load`."""

    files: list[str] = []
    full_load: bool = False


def partitions_for(spec: DatasetSpec) -> dg.DailyPartitionsDefinition | None:
    if not spec.daily_partitioned:
        return None
    # A day's batch becomes a partition once the day is over; files of today wait in landing.
    return dg.DailyPartitionsDefinition(start_date=spec.partitioning.start.isoformat())


def batch_dates(context: dg.AssetExecutionContext) -> list[date] | None:
    """The run's days (one partition or a backfill range); None for an unpartitioned dataset."""
    if not context.has_partition_key_range and not context.has_partition_key:
        return None
    window = context.partition_time_window
    days = (window.end - window.start).days
    return [window.start.date() + timedelta(days=i) for i in range(days)]


def column_schema(spec: DatasetSpec) -> dg.TableSchema:
    cols = [dg.TableColumn(c.name, c.type, description=c.description + (" [PII]" if c.pii else ""),
                           constraints=dg.TableColumnConstraints(
                               nullable=c.nullable, unique=spec.primary_key == [c.name],
                               other=[f"{k}: {v}" for k, v in (("enum", c.enum), ("pattern", c.pattern),
                                                               ("min", c.min), ("max", c.max)) if v is not None]),
                           tags={"pii": "true"} if c.pii else None)
            for c in spec.columns]
    lineage = [("_source_file", "string", "raw-zone file the row came from"),
               ("_batch_date", "date", "daily batch the file belongs to"),
               ("_ingested_at", "timestamptz", "when the file entered the raw zone")]
    return dg.TableSchema(columns=cols + [dg.TableColumn(n, t, description=d) for n, t, d in lineage])


def raw_key_of(spec: DatasetSpec) -> dg.AssetKey:
    return dg.AssetKey(["raw", spec.domain, spec.name])


def staged_key_of(spec: DatasetSpec) -> dg.AssetKey:
    return dg.AssetKey(["staged", spec.domain, spec.name])


def build_dataset(spec: DatasetSpec) -> dg.Definitions:
    """The dataset's raw and staged assets, quality checks and sensor (its freshness check and
    catch-up schedule: `freshness_checks`, `catch_up_schedules`)."""
    raw_key, staged_key = raw_key_of(spec), staged_key_of(spec)
    history_key = dg.AssetKey(["staged", spec.domain, spec.history_table])
    partitions = partitions_for(spec)
    backfill = dg.BackfillPolicy.single_run() if partitions else None
    freshness = (dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=spec.freshness.fail_after_hours),
        warn_window=timedelta(hours=spec.freshness.warn_after_hours) if spec.freshness.warn_after_hours else None)
        if spec.freshness else None)
    common = {"group_name": spec.domain, "owners": [spec.owner], "partitions_def": partitions}

    @dg.asset(key=raw_key, description=f"Immutable raw copies of the files of "
              f"{spec.key}: {spec.description}", kinds={spec.source.format},
              backfill_policy=backfill, freshness_policy=freshness,
              required_resource_keys={"lake", *connection_keys(spec)},
              metadata={"connection": spec.source.connection, "location": spec.source.location,
                        "pattern": spec.source.pattern}, **common)
    def raw_asset(context: dg.AssetExecutionContext, config: LandingFiles) -> dg.MaterializeResult:
        days = batch_dates(context)
        lake, source, keys, metadata = context.resources.lake.lake, open_source(context, spec), config.files or None, {}
        if spec.source.extracted:
            extraction = source.extract(lake, spec, full_load=config.full_load, run_id=context.run_id)
            context.log.info(f"{spec.key}: {'full load' if extraction.full_load else 'incremental'} extraction, "
                             f"{extraction.rows} row(s) in {extraction.pages} page(s), {extraction.seconds:.1f} s")
            metadata = extract_metadata(extraction)
            source, keys = None, [extraction.landing_key] if extraction.landing_key else []
        report = land(lake, spec, keys=keys, run_id=context.run_id,
                      batch_dates=None if days is None else set(days), source=source)
        context.log.info(f"{spec.key}: {len(report.accepted)} file(s) copied to raw, "
                         f"{len(report.duplicates)} duplicate(s) skipped")
        if days is None:
            return dg.MaterializeResult(metadata=metadata | land_metadata(report))
        batches = report.by_batch()
        add_partition_metadata(context, raw_key, days, lambda day: land_metadata(batches.get(day, LandReport())))
        return dg.MaterializeResult(metadata=metadata)

    staged_specs = [dg.AssetSpec(staged_key, deps=[raw_key], description=spec.description, freshness_policy=freshness,
                                 kinds={"iceberg", "duckdb"}, automation_condition=dg.AutomationCondition.eager(),
                                 metadata={"dagster/column_schema": column_schema(spec),
                                           "dagster/table_name": f"{spec.staged_namespace}.{spec.name}",
                                           "load_mode": spec.load_mode, "primary_key": ", ".join(spec.primary_key)},
                                 **common)]
    if spec.load_mode == "cdc":
        staged_specs.append(dg.AssetSpec(
            history_key, deps=[raw_key], description=f"SCD type 2 history of {spec.key}",
            kinds={"iceberg", "duckdb"}, metadata={"dagster/table_name": f"{spec.staged_namespace}.{spec.history_table}"},
            **common))

    @dg.multi_asset(specs=staged_specs, name=f"staged__{spec.domain}__{spec.name}", backfill_policy=backfill,
                    partitions_def=partitions, can_subset=False)
    def staged_asset(context: dg.AssetExecutionContext, lake: LakeResource):
        days = batch_dates(context)
        report = stage(lake.lake, spec, days, run_id=context.run_id)
        span = f"{days[0]}..{days[-1]}" if days else "all batches"
        context.log.info(f"{spec.key} {span}: {report.rows_in} rows in, {report.rows_staged} staged, "
                         f"{report.rows_quarantined} quarantined, {len(report.quarantined_files)} file(s) quarantined")
        table = table_metadata(spec, report, lake)
        if days is None:
            yield dg.MaterializeResult(asset_key=staged_key, metadata={
                "dagster/row_count": table["table_rows"]} | stage_metadata(report) | table)
        else:
            batches = report.by_batch()

            def batch_metadata(day: date) -> dict:
                batch = batches.get(day, StageReport(spec.key, [day]))
                return {"dagster/row_count": batch.rows_staged} | stage_metadata(batch)

            add_partition_metadata(context, staged_key, days, batch_metadata, last=table)
            yield dg.MaterializeResult(asset_key=staged_key)
        if spec.load_mode == "cdc":
            history = lake.lake.load_table(spec.staged_namespace, spec.history_table)
            rows = live_rows(history.current_snapshot()) if history else 0
            yield dg.MaterializeResult(asset_key=history_key, metadata={"dagster/row_count": rows})

    targets = [raw_key] + [s.key for s in staged_specs]
    sensors = [build_extract_sensor(spec, targets) if spec.source.extracted
               else build_landing_sensor(spec, targets, partitions)]
    return dg.Definitions(assets=[raw_asset, staged_asset], asset_checks=[build_checks(spec, staged_key)],
                          sensors=sensors)


def freshness_checks(specs: list[DatasetSpec]) -> list[dg.AssetChecksDefinition]:
    """A partition-aware `freshness_check` on each daily dataset's staged table: yesterday's batch
    must be in by the spec's deadline. One definition per deadline, not per dataset."""
    by_deadline: dict[str, list[dg.AssetKey]] = {}
    for spec in specs:
        if spec.daily_partitioned and spec.freshness:
            by_deadline.setdefault(spec.freshness.deadline, []).append(staged_key_of(spec))
    return [check for deadline, keys in by_deadline.items()
            for check in dg.build_time_partition_freshness_checks(assets=keys, deadline_cron=deadline)]


def catch_up_schedules(specs: list[DatasetSpec]) -> list[dg.ScheduleDefinition]:
    """Each daily dataset's catch-up schedule, `<domain>__<name>__daily_schedule`: at 06:00 it
    (re)builds yesterday's batch of the dataset's raw and staged assets. The schedules of datasets
    with the same partitions share one job (a job per dataset cost the code-location load a job
    each), and each one's run selects only its dataset's assets."""
    jobs = {}  # partitions definition -> its catch-up job
    daily = [(spec, partitions) for spec in specs if (partitions := partitions_for(spec))]
    for partitions in {partitions for _, partitions in daily}:
        keys = [key for spec, p in daily if p == partitions for key in (raw_key_of(spec), staged_key_of(spec))]
        jobs[partitions] = dg.define_asset_job(f"daily_catch_up_from_{partitions.start:%Y_%m_%d}", selection=keys,
                                               partitions_def=partitions)
    return [catch_up_schedule(spec, partitions, jobs[partitions]) for spec, partitions in daily]


def catch_up_schedule(spec: DatasetSpec, partitions: dg.DailyPartitionsDefinition, job) -> dg.ScheduleDefinition:
    @dg.schedule(job=job, name=f"{spec.domain}__{spec.name}__daily_schedule",
                 cron_schedule=partitions.get_cron_schedule(hour_of_day=6), execution_timezone=partitions.timezone,
                 default_status=dg.DefaultScheduleStatus.RUNNING,
                 description=f"Catch-up: (re)builds yesterday's batch of {spec.key} from whatever landed")
    def catch_up(context: dg.ScheduleEvaluationContext):
        with dg.partition_loading_context(effective_dt=context.scheduled_execution_time):
            partition_key = partitions.get_last_partition_key()
        if partition_key is None:
            return dg.SkipReason(f"{spec.key} has no daily batch yet")
        return dg.RunRequest(run_key=partition_key, partition_key=partition_key, tags=run_tags(spec),
                             asset_selection=[raw_key_of(spec), staged_key_of(spec)])

    return catch_up


def add_partition_metadata(context: dg.AssetExecutionContext, key: dg.AssetKey, days: list[date],
                           of_day: Callable[[date], dict], last: dict | None = None) -> None:
    """Dagster records a run over several partitions as one materialisation per partition: give
    each its own day's figures, and `last` (the run's previews and charts) to the last one only,
    the one the UI shows as latest, not a copy in each of hundreds of events."""
    for day in days:
        context.add_asset_metadata(of_day(day), asset_key=key, partition_key=day.isoformat())
    if last:
        context.add_asset_metadata(last, asset_key=key, partition_key=days[-1].isoformat())


def extract_metadata(extraction: Extraction) -> dict:
    return {
        "extraction": "full load" if extraction.full_load else "incremental",
        "rows_extracted": extraction.rows,
        "pages": extraction.pages,
        "extract_seconds": round(extraction.seconds, 3),
        "source_seconds": round(extraction.source_seconds, 3),
        "longest_source_query_seconds": round(extraction.longest_transaction_seconds, 3),
        "watermark": "—" if extraction.watermark is None else ", ".join(map(str, extraction.watermark)),
    }


def land_metadata(report: LandReport) -> dict:
    rows = report.accepted + report.duplicates
    table = "\n".join(f"| {r['original_name']} | {r['status']} | {r['size_bytes']:,} | {r['sha256'][:12]} | "
                      f"{r['batch_date']} |" for r in rows[:50])
    return {
        "files_accepted": len(report.accepted),
        "duplicates_skipped": len(report.duplicates),
        "bytes": sum(r["size_bytes"] for r in report.accepted),
        "files": dg.MetadataValue.md("| file | status | bytes | sha256 | batch |\n|---|---|---|---|---|\n" + table
                                     if rows else "_no new files_"),
    }


def loads_chart(lake: LakeResource, spec: DatasetSpec) -> dg.MetadataValue | None:
    """Rows staged and quarantined per daily batch, as a picture: gaps and bad days stand out."""
    loads = lake.lake.scan_sql("staged", "loads")
    if loads is None:
        return None
    rows = lake.lake.connect(views=False).execute(
        f"SELECT batch_date, sum(rows_staged), sum(rows_quarantined), count(*) FILTER (WHERE status = 'quarantined') "
        f"FROM {loads} WHERE dataset = ? GROUP BY 1 ORDER BY 1", [spec.key]).fetchall()
    if not rows:
        return None
    # One step a day (0 on days without a batch, so gaps show), not a bar each: a year of
    # batches draws in 0.1 s instead of 0.6 s.
    first = np.datetime64(rows[0][0], "D")
    days = np.arange(first, np.datetime64(rows[-1][0], "D") + 2)  # each day's left edge, then the end
    staged, quarantined = np.zeros(len(days) - 1), np.zeros(len(days) - 1)
    at = (np.array([r[0] for r in rows], dtype="datetime64[D]") - first).astype(int)
    staged[at], quarantined[at] = [r[1] for r in rows], [r[2] for r in rows]
    total = staged + quarantined
    fig, ax = new_figure()
    ax.stairs(staged, days, fill=True, label="rows staged", color="#3b7dd8")
    ax.stairs(total, days, baseline=staged, fill=True, label="rows quarantined", color="#d8573b")
    for day, rows_staged, rows_quarantined, bad_files in rows:
        if bad_files:  # over the middle of the day's step
            ax.annotate(f"+{bad_files} file(s)\nquarantined", (datetime.combine(day, time(12)), rows_staged + rows_quarantined),
                        xytext=(0, 3), textcoords="offset points", ha="center", fontsize=7, color="#d8573b")
    ax.set_ylim(0, total.max() * 1.35 or 1)
    ax.set_title(f"{spec.key}: rows per batch", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    ax.tick_params(labelsize=7)
    fig.autofmt_xdate()
    return figure_markdown(fig, "rows per batch")


def stage_metadata(report: StageReport) -> dict:
    """The counts of a staging run, or of one daily batch of it."""
    metadata = {
        "rows_in": report.rows_in,
        "rows_staged": report.rows_staged,
        "rows_quarantined": report.rows_quarantined,
        "files_read": len(report.files),
        "files_quarantined": len(report.quarantined_files),
        "reconciled": report.reconciled,
    }
    if report.quarantined_files:
        metadata["quarantine"] = dg.MetadataValue.md("| file | field | reason |\n|---|---|---|\n" + "\n".join(
            f"| {q['raw_key']} | {q['field']} | {q['reason'].replace('|', '/')} |" for q in report.quarantined_files[:50]))
    return metadata


def table_metadata(spec: DatasetSpec, report: StageReport, lake: LakeResource) -> dict:
    """The staged table after a run: its rows and snapshot, a preview, rows per batch, schema drift."""
    table = lake.lake.load_table(spec.staged_namespace, spec.name)
    snapshot = table.current_snapshot() if table else None
    metadata = {
        "table_rows": live_rows(snapshot),
        "preview": preview_markdown(report.preview, masked={c.name for c in spec.columns if c.pii}),
    }
    if report.new_columns:
        metadata["schema_drift_added_columns"] = ", ".join(report.new_columns)
    if snapshot:
        metadata["iceberg_snapshot_id"] = str(snapshot.snapshot_id)
    chart = loads_chart(lake, spec)
    if chart is not None:
        metadata["rows_per_batch"] = chart
    if report.cdc:
        metadata["cdc_merges"] = dg.MetadataValue.json([vars(result) for result in report.cdc])
    return metadata


QUALITY_CHECKS = (checks.schema_conforms, checks.primary_key_unique, checks.rows_reconcile, checks.column_rules)


def build_checks(spec: DatasetSpec, staged_key: dg.AssetKey) -> dg.AssetChecksDefinition:
    """The spec's quality checks on the staged table, all blocking: a failure stops downstream assets.
    One op evaluates them (a definition per check cost the code-location load a check op each), and
    each is still its own check in the UI, selectable on its own."""
    by_key = {dg.AssetCheckKey(staged_key, check.__name__): check for check in QUALITY_CHECKS}

    @dg.multi_asset_check(specs=[dg.AssetCheckSpec(key.name, asset=staged_key, description=check.__doc__, blocking=True)
                                 for key, check in by_key.items()],
                          name=f"staged__{spec.domain}__{spec.name}__checks", can_subset=True)
    def quality_checks(context: dg.AssetCheckExecutionContext, lake: LakeResource):
        errors = []
        for key, check in by_key.items():
            if key not in context.selected_asset_check_keys:
                continue
            try:
                outcome = check(lake.lake, spec)
            except Exception as exc:  # as when each check was an op: the others still report, the step fails
                context.log.error(f"{spec.key}: check {key.name} could not run: {exc!r}")
                errors.append(exc)
                continue
            yield dg.AssetCheckResult(check_name=key.name, passed=outcome.passed, description=outcome.description,
                                      metadata={k: v if isinstance(v, (int, float, str, bool)) else str(v)
                                                for k, v in outcome.metadata.items()})
        if errors:
            raise errors[0]

    return quality_checks
