"""The Quayside code location: every dataset spec becomes its assets, checks, sensor and schedule."""

from __future__ import annotations

import warnings
from pathlib import Path

import dagster as dg

from lake_assets.curated import curated_dbt_models
from lake_assets.factory import build_dataset
from quayside.specs import load_specs
from resources import build_resources
from sensors.alerts import alert_on_run_failure

DATASETS = Path(__file__).parent / "datasets"
# Single-run backfills and partition-aware freshness checks are beta/superseded in Dagster 1.13
# but are the features we want; say so once here instead of on every load.
for category in (dg.BetaWarning, dg.PreviewWarning, dg.SupersessionWarning):
    warnings.filterwarnings("ignore", category=category)


def build_definitions(datasets: Path = DATASETS) -> dg.Definitions:
    per_dataset = [build_dataset(spec) for spec in load_specs(datasets)]
    freshness_checks = [c for d in per_dataset for c in (d.asset_checks or []) if "freshness" in str(c.check_keys)]
    platform = dg.Definitions(
        assets=[curated_dbt_models],
        sensors=[alert_on_run_failure, dg.AutomationConditionSensorDefinition(
            "default_automation_condition_sensor", target=dg.AssetSelection.all(),
            default_status=dg.DefaultSensorStatus.RUNNING)] + ([dg.build_sensor_for_freshness_checks(
            freshness_checks=freshness_checks, default_status=dg.DefaultSensorStatus.RUNNING)]
            if freshness_checks else []),
        resources=build_resources(),
    )
    return dg.Definitions.merge(*per_dataset, platform)


defs = build_definitions()
