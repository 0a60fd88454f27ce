"""Shared fixtures: a fresh lake per test, on the embedded profile or on S3 + Glue (moto server)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from quayside import local_servers
from quayside.lake import Lake, LakeSettings
from quayside.specs import DatasetSpec, load_specs

DATASETS = Path(__file__).resolve().parent.parent / "lake_assets" / "datasets"
os.environ.setdefault("AWS_ACCESS_KEY_ID", "quayside-test")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "quayside-test")
os.environ.setdefault("AWS_REGION", "eu-west-2")
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def moto_endpoint():
    """A real moto server (S3, Glue, STS) on 127.0.0.1, for the whole session."""
    with local_servers.moto() as endpoint:
        yield endpoint


def make_aws_lake(endpoint: str) -> Lake:
    import boto3

    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-2").create_bucket(
        Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    return Lake(LakeSettings(profile="aws", bucket=bucket, endpoint_url=endpoint, region="eu-west-2",
                             glue_catalog_id=""))


@pytest.fixture
def local_lake(tmp_path) -> Lake:
    return Lake(LakeSettings(home=str(tmp_path / "lake")))


@pytest.fixture(params=["local", pytest.param("aws", marks=pytest.mark.aws)])
def lake(request, tmp_path) -> Lake:
    """The same test on both profiles: embedded (folder + SQLite catalog) and S3 + Glue on moto."""
    if request.param == "local":
        yield Lake(LakeSettings(home=str(tmp_path / "lake")))
        return
    lake = make_aws_lake(request.getfixturevalue("moto_endpoint"))
    yield lake
    drop_all_tables(lake)


def drop_all_tables(lake: Lake) -> None:
    """Glue (unlike a bucket) is shared by the session's lakes: leave it empty for the next test."""
    from quayside.raw_tables import glue_client

    glue = glue_client(lake)
    for (namespace,) in lake.catalog.list_namespaces():
        for ident in lake.catalog.list_tables(namespace):
            lake.catalog.drop_table(ident)
        # raw_<domain> holds the raw zone's Hive tables (quayside.raw_tables), which pyiceberg doesn't list
        for table in glue.get_tables(DatabaseName=namespace)["TableList"]:
            glue.delete_table(DatabaseName=namespace, Name=table["Name"])
        lake.catalog.drop_namespace(namespace)


@pytest.fixture(scope="session")
def demo_specs() -> dict[str, DatasetSpec]:
    return {s.key: s for s in load_specs(DATASETS)}


DBT_DIR = Path(__file__).resolve().parent.parent / "dbt_project"


def run_dbt(*args: str, env: dict[str, str], project: Path = DBT_DIR, check: bool = True):
    """The venv's dbt CLI on `project` (its profiles.yml too); with `check`, a failure fails the test."""
    import subprocess
    import sys

    dbt = str(Path(sys.executable).parent / "dbt")
    result = subprocess.run([dbt, *args, "--project-dir", str(project), "--profiles-dir", str(project)],
                            capture_output=True, text=True, env=env, cwd=project, timeout=600)
    if check:
        assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result


@pytest.fixture(scope="session")
def built_lake(tmp_path_factory):
    """The 7-day demo staged, the Python pre-processing step run, then `dbt build` on the local target."""
    from datetime import date

    import pyarrow as pa

    from quayside.demo import generate
    from quayside.ingest import land, stage
    from quayside.profiles import defendant_profiles
    from quayside.publish import publish

    home = tmp_path_factory.mktemp("dbt-lake")
    lake = Lake(LakeSettings(home=str(home)))  # also makes dbt-duckdb's folder
    generate(lake, end=date(2026, 11, 1))
    for spec in load_specs(DATASETS):
        landed = land(lake, spec)
        stage(lake, spec, landed.batch_dates if spec.daily_partitioned else None)
    staged = lake.connect()
    profiles = defendant_profiles(staged.sql("SELECT * FROM staged_courts.defendants").df(),
                                  staged.sql("SELECT * FROM staged_courts.cases").df())
    publish(lake, "prepared_courts", "defendant_profiles", pa.Table.from_pandas(profiles, preserve_index=False))
    env = os.environ | {"QUAYSIDE_HOME": str(home), "QUAYSIDE_PROFILE": "local", "PYTHONWARNINGS": "ignore"}
    run_dbt("build", "--target-path", str(home / "target-local"), env=env)
    return lake, env, home
