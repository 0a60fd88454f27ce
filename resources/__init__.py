"""Dagster resources, switched by environment in this one place.

`QUAYSIDE_PROFILE=local` (default): the embedded lake under `$QUAYSIDE_HOME` (a folder, a
SQLite Iceberg catalog, DuckDB). `QUAYSIDE_PROFILE=aws`: S3 bucket `$QUAYSIDE_BUCKET` and
the AWS Glue Data Catalog, credentials from the standard AWS chain (never from config).
"""

from __future__ import annotations

import os
import sys
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from quayside.lake import DEFAULT_HOME, Lake, LakeSettings

if TYPE_CHECKING:
    from dagster_dbt import DbtProject

class LakeResource(dg.ConfigurableResource):
    """The lake: storage zones, the Iceberg catalog and DuckDB, for one profile."""

    profile: str = "local"
    home: str = str(DEFAULT_HOME)
    bucket: str = ""
    region: str = "eu-west-2"
    endpoint_url: str = ""
    glue_catalog_id: str = ""
    athena_workgroup: str = "primary"

    @cached_property
    def lake(self) -> Lake:
        return Lake(LakeSettings(profile=self.profile, home=self.home, bucket=self.bucket, region=self.region,
                                 endpoint_url=self.endpoint_url, glue_catalog_id=self.glue_catalog_id,
                                 athena_workgroup=self.athena_workgroup))

def _env(name: str, default: str) -> str | dg.EnvVar:
    """Read through dg.EnvVar when set, so values show as env references in the UI, not literals."""

    return dg.EnvVar(name) if os.environ.get(name) else default

def lake_resource() -> LakeResource:
    settings = LakeSettings.from_env()  # validates the profile early, with a clear message
    if os.environ.get("QUAYSIDE_HOME"):
        # dbt runs in dbt_project/: a relative home must mean the same folder there as here.
        os.environ["QUAYSIDE_HOME"] = str(Path(settings.home).resolve())
    return LakeResource(
        profile=_env("QUAYSIDE_PROFILE", settings.profile),
        home=_env("QUAYSIDE_HOME", settings.home),
        bucket=_env("QUAYSIDE_BUCKET", settings.bucket),
        region=_env("AWS_REGION", settings.region),
        endpoint_url=_env("QUAYSIDE_AWS_ENDPOINT_URL", settings.endpoint_url),
        glue_catalog_id=_env("QUAYSIDE_GLUE_CATALOG_ID", settings.glue_catalog_id),
        athena_workgroup=_env("QUAYSIDE_ATHENA_WORKGROUP", settings.athena_workgroup),
    )

def build_resources(connections: dict[str, dg.ConfigurableResource] | None = None,
                    dbt_project: DbtProject | None = None) -> dict[str, object]:
    """The lake, its IO manager, dbt (the curated layer's project by default), and the source
    connections' resources (by name)."""
    from lake_assets.curated import DBT_PROJECT, LakeDbtCliResource
    from resources.lake_io import LakeIOManager

    # dbt's target follows QUAYSIDE_PROFILE too (dbt_project/profiles.yml): DuckDB locally, Athena on aws.
    dbt_executable = str(Path(sys.executable).parent / "dbt")  # the venv's dbt, whatever PATH says
    lake = lake_resource()
    return {"lake": lake, "lake_io": LakeIOManager(lake=lake),
            "dbt": LakeDbtCliResource(project_dir=dbt_project or DBT_PROJECT, dbt_executable=dbt_executable),
            **(connections or {})}
