"""The curated layer: the dbt project as Dagster assets.

dbt sources carry `meta.dagster.asset_key` (generated from the specs), so each staging model
hangs under the staged asset it reads; models are grouped by domain, marts get freshness.
The manifest is prepared once at install time (`make install` runs `dbt parse`), never on load.
"""

import json
from datetime import timedelta
from functools import cached_property
from importlib.metadata import version
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtCliResource, DbtProject, dbt_assets
from packaging.version import Version

DBT_DIR = Path(__file__).resolve().parent.parent / "dbt_project"
DBT_PROJECT = DbtProject(project_dir=DBT_DIR, profiles_dir=DBT_DIR)
DAILY_MODELS = "tag:daily"  # incremental models partitioned by day
MART_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=30), warn_window=timedelta(hours=26))
CURATED_AUTOMATION = dg.AutomationCondition.eager()  # curated follows staged; built once, shared by every model


class QuaysideTranslator(DagsterDbtTranslator):
    """Curated assets: key curated/<domain>/<model>, grouped by domain, owners and freshness from dbt."""

    def get_asset_spec(self, manifest: dict[str, Any], unique_id: str, project: DbtProject | None) -> dg.AssetSpec:
        # dagster-dbt asks again for a node's spec for every node downstream of it (and per @dbt_assets):
        # build each one once, or the load grows with the edges of the DAG, not its nodes.
        built = self.__dict__.setdefault("_curated_specs", {})
        memo_id = (id(manifest), unique_id, id(project))
        if memo_id not in built:
            built[memo_id] = self._curated_spec(manifest, unique_id, super().get_asset_spec(manifest, unique_id, project))
        return built[memo_id]

    @staticmethod
    def _curated_spec(manifest: dict[str, Any], unique_id: str, spec: dg.AssetSpec) -> dg.AssetSpec:
        node = manifest["nodes"].get(unique_id)
        if node is None:  # a source: its asset key comes from meta (the staged asset)
            return spec
        folders = node["fqn"][1:-1]  # [project, <layer>, <domain>, ..., model]
        layer = folders[0] if folders else "models"
        domain = folders[1] if len(folders) > 1 else "shared"
        owner = node.get("meta", {}).get("owner") or node.get("config", {}).get("meta", {}).get("owner")
        return spec.replace_attributes(
            key=dg.AssetKey(["curated" if layer == "marts" else layer, domain, node["name"]]),
            group_name=domain,
            owners=[owner] if owner else spec.owners,
            freshness_policy=MART_FRESHNESS if layer == "marts" else None,
            automation_condition=CURATED_AUTOMATION,
        ).merge_attributes(kinds={"iceberg"} if layer == "marts" else set())


class LakeDbtCliResource(DbtCliResource):
    """dagster-dbt's dbt CLI resource, for this environment's own dbt executable."""

    @cached_property
    def _cli_version(self) -> Version:
        # dagster-dbt runs `dbt --version` at the start of every run (~8 s: dbt imports itself and asks
        # PyPI for its latest release) only to learn the version; our executable is the venv's dbt, so
        # it is the installed dbt-core's.
        return Version(version("dbt-core"))


def dbt_build(dbt: DbtCliResource, context: dg.AssetExecutionContext, *args: str):
    """`dbt build` with each model's column types and column-level lineage attached for the UI."""
    try:
        invocation = dbt.cli(["build", *args], context=context)
        # On DuckDB dagster-dbt attaches column metadata only once dbt has exited (its file lock), and
        # waits for that in a busy loop that takes a core from dbt itself: wait here (blocking), then
        # replay dbt's buffered events. Errors are raised by the replay as before.
        invocation.is_successful()
        yield from invocation.stream().fetch_column_metadata()
    finally:
        # The column metadata is read through an in-process dbt-duckdb adapter, which keeps the
        # database file open (keep_open): close it, or the next dbt process cannot lock the file.
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager

        if DuckDBConnectionManager._ENV is not None:
            DuckDBConnectionManager._ENV.close()


def build_curated_assets(daily_partitions: dg.DailyPartitionsDefinition,
                         project: DbtProject = DBT_PROJECT) -> list[dg.AssetsDefinition]:
    """Two dbt asset definitions over one manifest: the models rebuilt whole, and the daily models
    (tag:daily), partitioned by day, where a partition or a backfill range is one `dbt build` with
    the window as vars (start_date inclusive, end_date exclusive)."""
    translator = QuaysideTranslator(DagsterDbtTranslatorSettings(enable_code_references=False))

    @dbt_assets(manifest=project.manifest_path, project=project, dagster_dbt_translator=translator,
                exclude=DAILY_MODELS, name="curated_dbt_models")
    def curated_dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
        yield from dbt_build(dbt, context)

    @dbt_assets(manifest=project.manifest_path, project=project, dagster_dbt_translator=translator,
                select=DAILY_MODELS, name="curated_daily_dbt_models", partitions_def=daily_partitions,
                backfill_policy=dg.BackfillPolicy.single_run())
    def curated_daily_dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
        window = context.partition_time_window
        dbt_vars = {"start_date": window.start.date().isoformat(), "end_date": window.end.date().isoformat()}
        yield from dbt_build(dbt, context, "--vars", json.dumps(dbt_vars))

    return [curated_dbt_models, curated_daily_dbt_models]
