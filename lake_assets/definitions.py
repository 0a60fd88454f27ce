"""The Quayside code location: every dataset spec becomes its assets, checks, sensor and schedule."""

from __future__ import annotations

import gc
from datetime import date
from pathlib import Path

import dagster as dg
from dagster_dbt import DbtProject

from lake_assets import analysis, maintenance, prepared
from lake_assets.curated import DBT_PROJECT, build_curated_assets
from lake_assets.factory import build_dataset, catch_up_schedules, freshness_checks
from quayside.connections import LANDING, source_mismatch
from quayside.specs import load_specs
from resources import build_resources
from resources.connections import connection_resources
from sensors.alerts import alert_on_run_failure

DATASETS = Path(__file__).parent / "datasets"
CONNECTIONS = Path(__file__).parent / "connections.yaml"


def build_definitions(datasets: Path = DATASETS, connections: Path = CONNECTIONS,
                      dbt_project: DbtProject = DBT_PROJECT) -> dg.Definitions:
    """`dbt_project` is the curated layer's dbt project, its manifest already prepared (`dbt parse`)."""
    specs = load_specs(datasets)
    sources = connection_resources(connections)
    kinds = {LANDING: LANDING} | {name: resource.type for name, resource in sources.items()}
    unknown = [f"{s.key}: source.connection {s.source.connection!r}" for s in specs if s.source.connection not in kinds]
    if unknown:
        raise ValueError(f"connections not declared in {connections}: {'; '.join(unknown)}")
    mismatched = [problem for s in specs if (problem := source_mismatch(s, kinds[s.source.connection]))]
    if mismatched:
        raise ValueError("; ".join(mismatched))
    per_dataset = [build_dataset(spec) for spec in specs]
    first_day = min((s.partitioning.start for s in specs if s.daily_partitioned), default=date.today())
    freshness = freshness_checks(specs)
    platform = dg.Definitions(
        assets=[prepared.defendant_profiles, *build_curated_assets(
            dg.DailyPartitionsDefinition(start_date=first_day.isoformat()), dbt_project), analysis.population_forecast],
        sensors=[alert_on_run_failure, dg.AutomationConditionSensorDefinition(
            "default_automation_condition_sensor", target=dg.AssetSelection.all(),
            default_status=dg.DefaultSensorStatus.RUNNING)] + ([dg.build_sensor_for_freshness_checks(
            freshness_checks=freshness, default_status=dg.DefaultSensorStatus.RUNNING)]
            if freshness else []),
        asset_checks=freshness,
        schedules=catch_up_schedules(specs),
        resources=build_resources(sources, dbt_project),
    )
    return dg.Definitions.merge(*per_dataset, platform, maintenance.defs)


def code_location(datasets: Path = DATASETS, connections: Path = CONNECTIONS,
                  dbt_project: DbtProject = DBT_PROJECT) -> dg.Definitions:
    """`build_definitions` for a code-location process, which keeps the definitions until it exits.
    CPython's cyclic collector walks every object each time the heap grows by a quarter: during the
    build (the dbt manifest, ~600k objects at 2,500 models), Dagster's snapshots and at exit it
    walked them ~6 times, a third of the load's CPU, and freed nothing. So: build with the collector
    paused, then freeze what exists (the definitions, the modules) out of later collections."""
    gc.disable()
    try:
        definitions = build_definitions(datasets, connections, dbt_project)
    finally:
        gc.enable()
    gc.freeze()
    return definitions


@dg.definitions
def defs() -> dg.Definitions:
    """The code location, built when Dagster loads it (not on import: the runners and tests import
    `build_definitions` from here without building the demo's definitions)."""
    return code_location()
