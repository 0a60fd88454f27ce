"""The generated IAM policies, enforced: a moto server with IAM authorisation on, users holding the
policies `quayside access --out` wrote, and real S3 calls allowed or refused.

moto evaluates Action, Resource and Effect (an explicit Deny wins) of identity policies on every S3
call, per key for DeleteObjects. It does not evaluate Conditions (StringLike s3:prefix on
ListBucket is ignored: any listing is allowed), and it checks Glue and Athena calls against the
resource "*" (so an ARN-scoped Allow is refused there too): only S3 is asserted here.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import boto3
import botocore.exceptions
import pyarrow as pa
import pytest

from quayside import local_servers
from quayside.access import table_prefix
from quayside.cli import main
from tests.conftest import DATASETS

pytestmark = pytest.mark.aws

ACCOUNT = "123456789012"  # moto's default account
REGION = "eu-west-2"
BUCKET = "quayside-iam-test"
KEYS = {
    "curated_courts": table_prefix("curated_courts", "court_case_timeliness_monthly") + "data/00000-0-a.parquet",
    "staged_courts": table_prefix("staged_courts", "cases") + "data/00000-0-b.parquet",
    "staged_courts_pii": table_prefix("staged_courts", "defendants") + "data/00000-0-c.parquet",
    "staged_courts_pii_metadata": table_prefix("staged_courts", "defendants") + "metadata/00001-d.metadata.json",
    "staged_prisons": table_prefix("staged_prisons", "population") + "data/00000-0-e.parquet",
    "raw": "raw/courts/cases/ingest_date=2026-11-01/cases_2026-11-01.csv",
    "raw_scratch": "raw/_incoming/0123456789abcdef",
    "landing": "landing/courts/cases/cases_2026-11-02.csv",
    "quarantine": "quarantine/courts/cases/cases_2026-10-31.csv",
}
# Another grant a role might pick up later; the platform policy's explicit Deny must still win.
BROAD = {"Version": "2012-10-17",
         "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": f"arn:aws:s3:::{BUCKET}/*"}]}


@pytest.fixture(scope="module")
def users(tmp_path_factory) -> dict[str, Callable[[], object]]:
    """S3 clients of IAM users holding the generated policies: 'analyst' (courts), 'platform'."""
    out = tmp_path_factory.mktemp("access")
    assert main(["access", "--out", str(out), "--bucket", BUCKET, "--account-id", ACCOUNT, "--region", REGION,
                 "--datasets", str(DATASETS)]) == 0
    policy = {name: json.loads((out / "iam" / f"quayside-{name}.json").read_text())
              for name in ("courts-analyst", "platform")}
    grants = {"analyst": [policy["courts-analyst"]], "platform": [policy["platform"], BROAD]}
    # Requests moto lets through unchecked: the bucket, its objects, and per user
    # create_user + create_access_key + (create_policy + attach_user_policy) per policy.
    unchecked = 1 + len(KEYS) + sum(2 + 2 * len(docs) for docs in grants.values())
    with local_servers.moto_with_iam(unchecked) as endpoint:
        setup = dict(endpoint_url=endpoint, region_name=REGION, aws_access_key_id="setup",
                     aws_secret_access_key="setup")
        s3, iam = boto3.client("s3", **setup), boto3.client("iam", **setup)
        sent = []
        for client in (s3, iam):
            client.meta.events.register("before-send", lambda **kw: sent.append(1))
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        for what, key in KEYS.items():
            s3.put_object(Bucket=BUCKET, Key=key, Body=f"{what}\n".encode())
        clients = {}
        for user, docs in grants.items():
            iam.create_user(UserName=user)
            for n, doc in enumerate(docs):
                arn = iam.create_policy(PolicyName=f"{user}-{n}", PolicyDocument=json.dumps(doc))["Policy"]["Arn"]
                iam.attach_user_policy(UserName=user, PolicyArn=arn)
            key = iam.create_access_key(UserName=user)["AccessKey"]
            clients[user] = boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                                         aws_access_key_id=key["AccessKeyId"],
                                         aws_secret_access_key=key["SecretAccessKey"])
        assert len(sent) == unchecked
        # From here on every request is checked: keys that belong to no IAM user are refused.
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            s3.list_objects_v2(Bucket=BUCKET)
        assert refused.value.response["Error"]["Code"] == "InvalidAccessKeyId"
        yield clients


def refused(call: Callable[[], object]) -> str:
    with pytest.raises(botocore.exceptions.ClientError) as exc:
        call()
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    return exc.value.response["Error"]["Code"]


def test_courts_analyst_reads_courts_tables(users):
    s3 = users["analyst"]
    assert s3.get_object(Bucket=BUCKET, Key=KEYS["curated_courts"])["Body"].read() == b"curated_courts\n"
    assert s3.get_object(Bucket=BUCKET, Key=KEYS["staged_courts"])["Body"].read() == b"staged_courts\n"
    assert s3.head_object(Bucket=BUCKET, Key=KEYS["curated_courts"])["ContentLength"] == len("curated_courts\n")
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=table_prefix("curated_courts"))
    assert [o["Key"] for o in listed["Contents"]] == [KEYS["curated_courts"]]


@pytest.mark.parametrize("what", ["staged_prisons", "raw", "landing", "quarantine", "staged_courts_pii",
                                  "staged_courts_pii_metadata"])
def test_courts_analyst_cannot_read_outside_its_tables(users, what):
    """Other domains, the raw/landing/quarantine zones, and the courts table holding PII columns
    (its files and manifests: only through Lake Formation)."""
    assert refused(lambda: users["analyst"].get_object(Bucket=BUCKET, Key=KEYS[what])) == "AccessDenied"


@pytest.mark.parametrize("write", ["put_curated", "put_raw", "put_landing", "delete_curated", "copy_into_curated"])
def test_courts_analyst_cannot_write(users, write):
    s3 = users["analyst"]
    calls = {
        "put_curated": lambda: s3.put_object(Bucket=BUCKET, Key=table_prefix("curated_courts", "x") + "f.parquet",
                                             Body=b"x"),
        "put_raw": lambda: s3.put_object(Bucket=BUCKET, Key="raw/courts/cases/ingest_date=2026-11-03/x.csv", Body=b"x"),
        "put_landing": lambda: s3.put_object(Bucket=BUCKET, Key="landing/courts/cases/x.csv", Body=b"x"),
        "delete_curated": lambda: s3.delete_object(Bucket=BUCKET, Key=KEYS["curated_courts"]),
        "copy_into_curated": lambda: s3.copy_object(Bucket=BUCKET, Key=KEYS["curated_courts"] + ".copy",
                                                    CopySource={"Bucket": BUCKET, "Key": KEYS["curated_courts"]}),
    }
    assert refused(calls[write]) == "AccessDenied"


def test_courts_analyst_batch_delete_is_refused_per_key(users):
    s3 = users["analyst"]
    answer = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": KEYS["curated_courts"]},
                                                                  {"Key": KEYS["staged_courts"]}]})
    assert sorted((e["Key"], e["Code"]) for e in answer["Errors"]) == sorted(
        [(KEYS["curated_courts"], "AccessDenied"), (KEYS["staged_courts"], "AccessDenied")])
    assert not answer.get("Deleted")
    assert s3.get_object(Bucket=BUCKET, Key=KEYS["curated_courts"])["Body"].read() == b"curated_courts\n"


def test_platform_role_runs_the_lake_but_never_deletes_raw_files(users):
    s3 = users["platform"]
    s3.put_object(Bucket=BUCKET, Key="landing/prisons/population/p.csv", Body=b"p")
    s3.put_object(Bucket=BUCKET, Key="raw/prisons/population/ingest_date=2026-11-02/p.csv", Body=b"p")
    s3.put_object(Bucket=BUCKET, Key="quarantine/prisons/population/p.csv", Body=b"p")
    assert s3.get_object(Bucket=BUCKET, Key=KEYS["raw"])["Body"].read() == b"raw\n"
    assert s3.get_object(Bucket=BUCKET, Key=KEYS["staged_prisons"])["Body"].read() == b"staged_prisons\n"
    s3.delete_object(Bucket=BUCKET, Key="landing/prisons/population/p.csv")  # after_ingest: delete
    s3.delete_object(Bucket=BUCKET, Key=KEYS["raw_scratch"])  # the ingest's move out of raw/_incoming/
    # A placed raw file cannot be deleted, although the second policy allows s3:* on the bucket.
    for key in (KEYS["raw"], "raw/prisons/population/ingest_date=2026-11-02/p.csv"):
        assert refused(lambda: s3.delete_object(Bucket=BUCKET, Key=key)) == "AccessDenied"
    answer = s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": KEYS["raw"]}]})
    assert [(e["Key"], e["Code"]) for e in answer["Errors"]] == [(KEYS["raw"], "AccessDenied")]
    assert s3.get_object(Bucket=BUCKET, Key=KEYS["raw"])["Body"].read() == b"raw\n"


def test_table_locations_are_the_policies_prefixes(lake):
    """The policies name `warehouse/<namespace>/<table>/`: that is where the lake puts a table,
    on both profiles (pyiceberg under the namespace's location; Glue on moto for aws)."""
    table = lake.create_table("staged_courts", "access_probe", pa.schema([pa.field("id", pa.int64())]))
    expected = table_prefix("staged_courts", "access_probe").rstrip("/")
    if lake.settings.profile == "aws":
        assert table.location() == f"s3://{lake.settings.bucket}/{expected}"
    else:
        assert table.location().endswith("/" + expected)
