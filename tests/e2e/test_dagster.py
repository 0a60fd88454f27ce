"""The demo tenant through Dagster: definitions, sensors and a full materialisation, asserted on the tables."""

from __future__ import annotations

from datetime import date

import dagster as dg
import pytest

from lake_assets.definitions import DATASETS, build_definitions
from quayside.demo import generate
from quayside.lake import Lake, LakeSettings
from tests.conftest import drop_all_tables, make_aws_lake

END = date(2026, 11, 1)


@pytest.fixture
def demo_days() -> int:
    return 7


@pytest.fixture(params=["local", pytest.param("aws", marks=pytest.mark.aws)])
def demo_home(request, tmp_path, monkeypatch, demo_days):
    """The demo tenant's files in landing, on the profile the environment selects (as in production)."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    (tmp_path / "dagster").mkdir()
    (tmp_path / "dagster" / "dagster.yaml").write_text("")
    if request.param == "aws":
        lake = make_aws_lake(request.getfixturevalue("moto_endpoint"))
        monkeypatch.setenv("QUAYSIDE_PROFILE", "aws")
        monkeypatch.setenv("QUAYSIDE_BUCKET", lake.settings.bucket)
        monkeypatch.setenv("QUAYSIDE_AWS_ENDPOINT_URL", lake.settings.endpoint_url)
    else:
        monkeypatch.setenv("QUAYSIDE_PROFILE", "local")
        monkeypatch.setenv("QUAYSIDE_HOME", str(tmp_path / "quayside"))
        lake = Lake(LakeSettings(home=str(tmp_path / "quayside")))
    summary = generate(lake, end=END, days=demo_days)
    yield lake, summary
    if request.param == "aws":
        drop_all_tables(lake)


def test_definitions_load_with_assets_checks_sensors_and_schedules():
    defs = build_definitions(DATASETS)
    dg.Definitions.validate_loadable(defs)
    keys = {k.to_user_string() for k in defs.resolve_all_asset_keys()}
    assert {"raw/prisons/population", "staged/prisons/population", "staged/courts/cases",
            "staged/courts/cases_history"} <= keys
    check_names = {c.name for c in defs.resolve_asset_graph().asset_check_keys}
    assert {"schema_conforms", "primary_key_unique", "rows_reconcile", "column_rules", "freshness_check"} <= check_names
    sensors = {s.name for s in defs.sensors}
    assert "prisons__population__landing" in sensors and "alert_on_run_failure" in sensors
    staged = defs.resolve_assets_def(dg.AssetKey(["staged", "prisons", "population"]))
    spec = staged.specs_by_key[dg.AssetKey(["staged", "prisons", "population"])]
    assert spec.freshness_policy is not None and spec.owners == ["team:prisons-data"]
    assert spec.metadata["dagster/column_schema"].columns[0].name == "snapshot_date"
    graph = defs.resolve_asset_graph()
    quality = {k.name: graph.get(k) for k in graph.asset_check_keys if k.asset_key == spec.key}
    assert all(quality[name].blocking for name in ("schema_conforms", "primary_key_unique", "rows_reconcile",
                                                   "column_rules"))
    assert quality["schema_conforms"].description.startswith("Every spec column")


def test_catch_up_schedule_rebuilds_yesterdays_batch_of_its_dataset_only():
    from datetime import datetime, timezone

    defs = build_definitions(DATASETS)
    schedule = defs.get_schedule_def("prisons__population__daily_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING and schedule.cron_schedule == "0 6 * * *"
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 11, 2, 6, tzinfo=timezone.utc),
                                        repository_def=defs.get_repository_def())
    [request] = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-11-01"
    assert set(request.asset_selection) == {dg.AssetKey(["raw", "prisons", "population"]),
                                            dg.AssetKey(["staged", "prisons", "population"])}


class SensorDriver:
    """Evaluates the prisons landing sensor tick by tick, carrying its cursor."""

    def __init__(self):
        self.defs = build_definitions(DATASETS)
        self.sensor = self.defs.get_sensor_def("prisons__population__landing")
        self.instance = dg.DagsterInstance.ephemeral()
        self.cursor = None

    def tick(self) -> list[dg.RunRequest]:
        result = self.sensor.evaluate_tick(dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources={"lake": self.defs.resources["lake"]},
            definitions=self.defs))
        self.cursor = result.cursor
        return result.run_requests


def test_landing_sensor_requests_one_run_per_daily_batch(demo_home):
    lake, _ = demo_home
    driver = SensorDriver()
    if lake.settings.profile == "local":
        assert not driver.tick()  # local files must look the same size twice; S3 objects appear whole
    requests = driver.tick()
    assert sorted(r.partition_key for r in requests) == [f"2026-10-{d}" for d in range(26, 32)] + ["2026-11-01"]
    files = sum(len(r.run_config["ops"]["raw__prisons__population"]["config"]["files"]) for r in requests)
    assert files == 12  # 7 daily files + 5 awkward ones, never the readme
    assert not driver.tick()


def test_a_sensor_run_lands_its_files(demo_home):
    lake, _ = demo_home
    driver = SensorDriver()
    if lake.settings.profile == "local":
        driver.tick()
    request = next(r for r in driver.tick() if r.partition_key == "2026-10-29")
    job = driver.defs.resolve_implicit_job_def_def_for_assets(list(request.asset_selection))
    result = job.execute_in_process(instance=driver.instance, partition_key=request.partition_key,
                                    run_config=request.run_config, asset_selection=list(request.asset_selection))
    assert result.success
    rows = lake.connect().sql("SELECT count(*), count(DISTINCT snapshot_date) FROM staged_prisons.population").fetchone()
    assert rows == (117, 1)  # 120 establishments, 3 rows with population 'lots' quarantined
    assert lake.connect().sql("SELECT count(*) FROM quarantine.rows").fetchone() == (3,)


@pytest.mark.parametrize("demo_home", ["local"], indirect=True)
def test_a_backfill_range_records_each_partition_with_its_own_figures(demo_home):
    """One run over seven days: a materialisation per partition with that day's counts; the table's
    preview and chart once, on the last partition (the one the UI shows as latest)."""
    lake, _ = demo_home
    keys = [dg.AssetKey(["raw", "prisons", "population"]), dg.AssetKey(["staged", "prisons", "population"])]
    job = build_definitions(DATASETS).resolve_implicit_job_def_def_for_assets(keys)
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), asset_selection=keys, tags={
        "dagster/asset_partition_range_start": "2026-10-26", "dagster/asset_partition_range_end": "2026-11-01"})
    assert result.success
    staged = {m.partition: m.metadata for m in result.asset_materializations_for_node("staged__prisons__population")}
    per_day = dict(lake.connect().sql("SELECT _batch_date::VARCHAR, count(*) FROM staged_prisons.population "
                                      "GROUP BY 1").fetchall())
    assert {day: m["dagster/row_count"].value for day, m in staged.items()} == per_day and len(per_day) == 7
    assert staged["2026-10-29"]["rows_quarantined"].value == 3 and staged["2026-10-28"]["rows_quarantined"].value == 0
    assert [day for day, m in staged.items() if "preview" in m and "rows_per_batch" in m] == ["2026-11-01"]
    assert staged["2026-11-01"]["table_rows"].value == sum(per_day.values())
    raw = result.asset_materializations_for_node("raw__prisons__population")
    assert len(raw) == 7 and all(m.metadata["files_accepted"].value >= 1 for m in raw)


@pytest.mark.slow
@pytest.mark.parametrize("demo_home", ["local"], indirect=True)  # S3 + Glue: covered by the tests above
@pytest.mark.parametrize("demo_days", [21])  # three weeks: enough history for the population forecast
def test_make_run_materialises_the_demo(demo_home):
    from lake_assets import run

    lake, summary = demo_home
    assert run.main([]) == 0
    con = lake.connect()
    count = lambda table: con.sql(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: E731
    assert count("staged_prisons.population") == summary.rows["prisons.population"]
    assert count("staged_monitoring.em_events") == summary.rows["monitoring.em_events"]
    assert count("staged_legal_aid.payments") == summary.rows["legal_aid.payments"]
    for dataset in ("cases", "hearings", "defendants"):
        assert count(f"staged_courts.{dataset}") == summary.current_rows[f"courts.{dataset}"], dataset
    assert con.sql("SELECT count(*) FROM staged_monitoring.em_events WHERE battery_pct IS NOT NULL").fetchone()[0] > 0
    reasons = [r for (r,) in con.sql("SELECT reason FROM quarantine.files ORDER BY reason").fetchall()]
    assert len(reasons) == 5 and any("empty file" in r for r in reasons)
    assert count("quarantine.rows") == 3
    # The curated layer: dbt marts written back as Iceberg tables, consistent with the staged rows.
    assert count("curated_prisons.prison_population_daily") == summary.rows["prisons.population"]
    spend = con.sql("SELECT sum(total_amount) FROM curated_legal_aid.legal_aid_spend_monthly").fetchone()[0]
    assert spend == con.sql("SELECT sum(amount) FROM staged_legal_aid.payments").fetchone()[0]
    assert count("prepared_courts.defendant_profiles") == summary.current_rows["courts.defendants"]
    assert not {"first_name", "last_name", "date_of_birth", "postcode"} & {
        c for (c,) in con.sql("SELECT column_name FROM (DESCRIBE prepared_courts.defendant_profiles)").fetchall()}
    assert con.sql("SELECT sum(defendants) FROM curated_courts.court_custody_profile_monthly").fetchone()[0] == con.sql(
        "SELECT count(*) FROM prepared_courts.defendant_profiles JOIN staged_courts.cases USING (case_id)").fetchone()[0]
    compliance = con.sql("SELECT count(*), sum(subjects_monitored) FROM curated_monitoring.em_compliance_daily").fetchone()
    assert compliance == con.sql("SELECT count(DISTINCT event_time::date), count(DISTINCT (subject_id, event_time::date)) "
                                 "FROM staged_monitoring.em_events").fetchone()
    prisons = con.sql("SELECT count(DISTINCT establishment_code) FROM staged_prisons.population").fetchone()[0]
    assert con.sql("SELECT count(DISTINCT establishment_code), count(*) FROM curated_prisons.population_forecast"
                   ).fetchone() == (prisons, prisons * 28)
    # The UI shows each mart's column types and column-level lineage back to its dbt parents.
    mart = dg.DagsterInstance.get().get_latest_materialization_event(
        dg.AssetKey(["curated", "courts", "court_case_timeliness_monthly"])).asset_materialization.metadata
    lineage = mart["dagster/column_lineage"].value.deps_by_column["avg_days_to_disposal"]
    assert [(d.asset_key.path[-1], d.column_name) for d in lineage] == [("int_courts__case_durations", "days_to_disposal")]
    assert {c.name: c.type for c in mart["dagster/column_schema"].value.columns}["cases_disposed"] == "BIGINT"
    statuses = dict(con.sql("SELECT status, count(*) FROM raw.manifest GROUP BY 1").fetchall())
    assert statuses["duplicate"] == 1
    # Re-running changes nothing: same rows, no new raw files.
    assert run.main([]) == 0
    con = lake.connect()
    assert count("staged_prisons.population") == summary.rows["prisons.population"]
    assert con.sql("SELECT count(*) FROM raw.manifest").fetchone()[0] == sum(statuses.values())


@pytest.mark.slow
def test_make_run_sources_ingests_the_demo_through_every_connector(tmp_path, monkeypatch, capsys):
    """The second README command: real servers, sensors, runs; same staged tables as `make run`."""
    from lake_assets import run_sources

    monkeypatch.setenv("QUAYSIDE_HOME", str(tmp_path / "lake"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    (tmp_path / "dagster").mkdir()
    assert run_sources.main(["--end", "2026-11-01", "--days", "3"]) == 0
    out = capsys.readouterr().out
    for channel in ("database", "http_api", "push", "fileshare", "sftp", "s3", "azure_blob"):
        assert f" via {channel}" in out
    lake = Lake(LakeSettings(home=str(tmp_path / "lake")))
    con = lake.connect()
    counts = dict(con.sql("SELECT dataset, count(*) FROM raw.manifest WHERE status = 'accepted' GROUP BY 1").fetchall())
    assert set(counts) == set(run_sources.CHANNELS)
    assert con.sql("SELECT count(*) FROM staged_courts.cases").fetchone()[0] == \
        con.sql("SELECT sum(rows) FROM raw.extracts WHERE dataset = 'courts.cases'").fetchone()[0] > 0
    assert con.sql("SELECT count(*) FROM curated_courts.court_case_timeliness_monthly").fetchone()[0] > 0
    assert "prisons/population/readme.txt" not in out.split("landing files matching no dataset")[-1]
