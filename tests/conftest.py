"""Shared fixtures: a fresh lake per test, on the embedded profile or on S3 + Glue (moto server)."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

import pytest

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
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


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
    for (namespace,) in lake.catalog.list_namespaces():
        for ident in lake.catalog.list_tables(namespace):
            lake.catalog.drop_table(ident)
        lake.catalog.drop_namespace(namespace)


@pytest.fixture(scope="session")
def demo_specs() -> dict[str, DatasetSpec]:
    return {s.key: s for s in load_specs(DATASETS)}
