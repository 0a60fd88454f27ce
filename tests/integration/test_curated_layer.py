"""The curated layer when things go wrong, and its daily partitions through Dagster.

Each bad-input test runs dbt on a copy of the project with one thing broken, against the built
demo lake, and checks the error names the culprit and no curated table was half-written.
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from quayside.lake import Lake, LakeSettings
from quayside.specs import load_specs
from tests.conftest import DATASETS, DBT_DIR, run_dbt

SPEND = ("curated_legal_aid", "legal_aid_spend_monthly")
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


@pytest.fixture
def project(tmp_path) -> Path:
    copy = tmp_path / "dbt_project"
    shutil.copytree(DBT_DIR, copy, ignore=shutil.ignore_patterns("target", "logs"))
    return copy


def snapshot_of(lake: Lake, table: tuple[str, str]) -> int:
    return lake.load_table(*table).current_snapshot().snapshot_id


def build(project: Path, env: dict, *select: str):
    return run_dbt("build", "--select", *select, "--target-path", str(project / "target"), env=env,
                   project=project, check=False)


def test_a_model_that_fails_leaves_the_previous_curated_snapshot(built_lake, project):
    lake, env, _ = built_lake
    before = snapshot_of(lake, SPEND)
    model = project / "models/marts/legal_aid/legal_aid_spend_monthly.sql"
    model.write_text(model.read_text().replace("count(*) as payments", "cast(category as integer) as payments"))
    result = build(project, env, "legal_aid_spend_monthly")
    assert result.returncode == 1
    assert "legal_aid_spend_monthly" in result.stdout and "Conversion Error" in result.stdout
    assert snapshot_of(lake, SPEND) == before
    assert lake.connect().sql("SELECT count(*) FROM curated_legal_aid.legal_aid_spend_monthly").fetchone()[0] > 0


@pytest.mark.parametrize("severity, returncode, mart", [("warn", 0, "OK"), ("error", 1, "SKIP")])
def test_a_failing_test_warns_or_blocks_the_models_after_it(built_lake, project, severity, returncode, mart):
    lake, env, _ = built_lake
    before = snapshot_of(lake, SPEND)
    (project / "tests/no_payments_over_10k.sql").write_text(
        f"{{{{ config(severity='{severity}') }}}}\n"
        "select * from {{ ref('stg_legal_aid__payments') }} where amount > 10000\n")
    result = build(project, env, "stg_legal_aid__payments+")
    assert result.returncode == returncode, result.stdout[-3000:]
    assert f"{'WARN' if severity == 'warn' else 'FAIL'} " in result.stdout and "no_payments_over_10k" in result.stdout
    assert any(mart in line for line in result.stdout.splitlines() if "legal_aid_spend_monthly" in line)
    assert (snapshot_of(lake, SPEND) == before) == (severity == "error")


def test_a_source_table_that_does_not_exist_yet_is_named(tmp_path, built_lake, project):
    _, env, _ = built_lake
    empty = tmp_path / "empty-lake"
    Lake(LakeSettings(home=str(empty)))  # the lake exists, nothing staged yet
    result = build(project, env | {"QUAYSIDE_HOME": str(empty)}, "stg_courts__cases")
    assert result.returncode == 1
    assert "stg_courts__cases" in result.stdout and "staged_courts" in result.stdout and "does not exist" in result.stdout


@pytest.mark.parametrize("sql, message", [
    ("select * from {{ ref('no_such_model') }}", "no_such_model' which was not found"),
    ("select {{ config(materialized='view' }} 1 as x", "Compilation Error"),
])
def test_a_project_that_does_not_compile_fails_at_parse_time(built_lake, project, sql, message):
    _, env, _ = built_lake
    (project / "models/marts/legal_aid/broken.sql").write_text(sql)
    result = run_dbt("parse", "--target-path", str(project / "target"), env=env, project=project, check=False)
    assert result.returncode != 0
    assert message in result.stdout and "broken" in result.stdout


# --- through Dagster ---------------------------------------------------------------------------
@pytest.fixture
def curated_defs(built_lake, monkeypatch, tmp_path):
    _, env, _ = built_lake
    for name in ("QUAYSIDE_HOME", "QUAYSIDE_PROFILE"):
        monkeypatch.setenv(name, env[name])
    from lake_assets.definitions import build_definitions

    return build_definitions(), dg.DagsterInstance.ephemeral()


def test_a_daily_partition_rebuilds_its_day_and_a_backfill_is_one_dbt_build(built_lake, curated_defs):
    lake, _, _ = built_lake
    defs, instance = curated_defs
    key = dg.AssetKey(["curated", "monitoring", "em_compliance_daily"])
    job = defs.resolve_implicit_job_def_def_for_assets([key])
    days = lambda: [d.isoformat() for (d,) in lake.connect().sql(  # noqa: E731
        "SELECT event_date FROM curated_monitoring.em_compliance_daily ORDER BY 1").fetchall()]
    full_build = lake.connect().sql("SELECT * FROM curated_monitoring.em_compliance_daily ORDER BY 1").fetchall()
    assert len(full_build) == 7  # the fixture's plain `dbt build` made every day

    lake.catalog.drop_table(("curated_monitoring", "em_compliance_daily"))
    result = job.execute_in_process(instance=instance, asset_selection=[key], partition_key="2026-10-28")
    assert result.success and days() == ["2026-10-28"]
    result = job.execute_in_process(instance=instance, asset_selection=[key],
                                    tags={RANGE_START: "2026-10-29", RANGE_END: "2026-10-31"})
    assert result.success and days() == ["2026-10-28", "2026-10-29", "2026-10-30", "2026-10-31"]
    # One step, so one dbt invocation, recording a materialisation for each day of the range.
    assert len([e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_START]) == 1
    partitions = sorted(m.partition for m in result.asset_materializations_for_node("curated_daily_dbt_models"))
    assert partitions == ["2026-10-29", "2026-10-30", "2026-10-31"]
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)
    # Backfilling every day (four of them again) gives exactly what the full build gave.
    assert job.execute_in_process(instance=instance, asset_selection=[key],
                                  tags={RANGE_START: "2026-10-26", RANGE_END: "2026-11-01"}).success
    assert lake.connect().sql("SELECT * FROM curated_monitoring.em_compliance_daily ORDER BY 1").fetchall() == full_build


def test_a_failing_model_fails_its_dagster_run_with_the_dbt_error(built_lake, curated_defs, project):
    from dagster_dbt import DbtProject

    from lake_assets.curated import build_curated_assets

    lake, env, _ = built_lake
    defs, instance = curated_defs
    before = snapshot_of(lake, SPEND)
    model = project / "models/marts/legal_aid/legal_aid_spend_monthly.sql"
    model.write_text(model.read_text().replace("count(*) as payments", "cast(category as integer) as payments"))
    run_dbt("parse", env=env, project=project)  # as `make install` does for the real project
    whole, _ = build_curated_assets(dg.DailyPartitionsDefinition("2026-09-01"), DbtProject(project, profiles_dir=project))
    keys = [dg.AssetKey(["staging", "legal_aid", "stg_legal_aid__payments"]),
            dg.AssetKey(["curated", "legal_aid", "legal_aid_spend_monthly"])]
    result = dg.materialize([whole], selection=keys, instance=instance, resources={"dbt": defs.resources["dbt"]},
                            raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE)
    message = str(failure.step_failure_data.error)
    assert "legal_aid_spend_monthly" in message and "Conversion Error" in message
    assert snapshot_of(lake, SPEND) == before


def test_a_model_built_alone_skips_the_relationship_tests_to_models_not_in_its_run(tmp_path, monkeypatch):
    """Automation builds a staging model as soon as its staged table changes, alone: its relationship
    test to a model outside the run is left to the runs that build both (dbt's `buildable` selection),
    instead of failing on a table that is not built yet."""
    from quayside.demo import generate
    from quayside.ingest import land, stage

    home = tmp_path / "lake"
    lake = Lake(LakeSettings(home=str(home)))
    generate(lake, end=date(2026, 11, 1), days=1)
    for spec in load_specs(DATASETS):
        if spec.key in ("courts.cases", "courts.hearings"):
            landed = land(lake, spec)
            stage(lake, spec, landed.batch_dates if spec.daily_partitioned else None)
    monkeypatch.setenv("QUAYSIDE_HOME", str(home))
    monkeypatch.setenv("QUAYSIDE_PROFILE", "local")
    from lake_assets.definitions import build_definitions

    defs, instance = build_definitions(), dg.DagsterInstance.ephemeral()
    hearings, cases = (dg.AssetKey(["staging", "courts", f"stg_courts__{name}"]) for name in ("hearings", "cases"))
    job = defs.resolve_implicit_job_def_def_for_assets([hearings])
    relationship = lambda result: [c for c in result.get_asset_check_evaluations()  # noqa: E731
                                   if c.check_name.startswith("relationships")]

    alone = job.execute_in_process(instance=instance, asset_selection=[hearings], raise_on_error=False)
    assert alone.success, [str(e.step_failure_data.error) for e in alone.all_events if e.is_step_failure]
    assert not relationship(alone) and alone.get_asset_check_evaluations()  # its own unique/not_null ran
    both = job.execute_in_process(instance=instance, asset_selection=[hearings, cases])
    # It ran against the built cases model (the demo has hearings of cases not delivered yet: a warning).
    assert [(c.asset_key, c.severity) for c in relationship(both)] == [(hearings, dg.AssetCheckSeverity.WARN)]
