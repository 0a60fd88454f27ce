"""`quayside access`: the generated IAM policies and Lake Formation grants, checked against the specs.

Lake Formation cannot run here, so its tag-based access is evaluated by the rules it documents:
a database's LF-tags are inherited by its tables and columns, a tag assigned lower down replaces
the inherited value of the same key, and a grant's expression reaches a column when, for every key
in it, the column's value is one of the expression's values.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from quayside.access import AccessError, AccessSettings, generate, pii_columns, table_prefix
from quayside.cli import main
from quayside.specs import CDC_HISTORY_COLUMNS, LINEAGE_COLUMNS, DatasetSpec, load_specs

DATASETS = Path(__file__).resolve().parents[2] / "lake_assets" / "datasets"
SETTINGS = AccessSettings(bucket="quayside-lake", account_id="111122223333", region="eu-west-2")
SPECS = load_specs(DATASETS)
DOC = generate(SPECS, SETTINGS)


def staged_columns(specs: list[DatasetSpec]) -> dict[tuple[str, str], list[str]]:
    """Every column of every staged table the specs make (lineage and CDC history columns too)."""
    out = {}
    for spec in specs:
        columns = [c.name for c in spec.columns] + list(LINEAGE_COLUMNS)
        out[(spec.staged_namespace, spec.name)] = columns
        if spec.load_mode == "cdc":
            out[(spec.staged_namespace, spec.history_table)] = columns + list(CDC_HISTORY_COLUMNS)
    return out


def spec_pii(specs: list[DatasetSpec]) -> set[tuple[str, str, str]]:
    """(namespace, table, column) of every column the specs mark `pii: true`, read from the specs."""
    return {(spec.staged_namespace, table, c.name) for spec in specs for c in spec.columns if c.pii
            for table in [spec.name] + ([spec.history_table] if spec.load_mode == "cdc" else [])}


def column_tags(doc: dict, columns: dict[tuple[str, str], list[str]]) -> dict[tuple[str, str, str], dict[str, str]]:
    databases, overrides = {}, {}
    for a in doc["lf_tag_assignments"]:
        tags = {t["key"]: t["value"] for t in a["lf_tags"]}
        if "database" in a:
            databases[a["database"]["name"]] = tags
        else:
            t = a["table_with_columns"]
            for column in t["column_names"]:
                overrides[(t["database_name"], t["name"], column)] = tags
    return {(ns, table, c): databases.get(ns, {}) | overrides.get((ns, table, c), {})
            for (ns, table), cols in columns.items() for c in cols}


def reachable(doc: dict, principal: str, tags: dict) -> set[tuple[str, str, str]]:
    out = set()
    for g in doc["lf_grants"]:
        policy = g.get("lf_tag_policy")
        if (g["principal"] != principal or not policy or policy["resource_type"] != "TABLE"
                or "SELECT" not in g["permissions"]):
            continue
        for column, values in tags.items():
            if all(values.get(e["key"]) in e["values"] for e in policy["expression"]):
                out.add(column)
    return out


def iam_match(pattern: str, value: str) -> bool:
    """IAM's Resource wildcards: * any run of characters (slashes too), ? one character."""
    return re.fullmatch(re.escape(pattern).replace(r"\*", ".*").replace(r"\?", "."), value) is not None


def test_demo_specs_have_pii_columns():
    assert pii_columns(SPECS) == {
        ("staged_courts", "defendants"): ["first_name", "last_name", "date_of_birth", "postcode"],
        ("staged_courts", "defendants_history"): ["first_name", "last_name", "date_of_birth", "postcode"],
        ("staged_monitoring", "em_events"): ["latitude", "longitude"],
    }


def test_every_pii_column_is_tagged_pii_true_and_every_other_column_inherits_false():
    columns = staged_columns(SPECS)
    tags = column_tags(DOC, columns)
    pii = spec_pii(SPECS)
    assert pii and {k for k, v in tags.items() if v.get("pii") == "true"} == pii
    assert all(v.get("pii") == "false" for k, v in tags.items() if k not in pii)
    assert all(v.get("domain") == k[0].removeprefix("staged_") and v.get("zone") == "staged" for k, v in tags.items())


def test_analysts_reach_every_non_pii_column_of_their_domain_and_nothing_else():
    columns = staged_columns(SPECS)
    tags = column_tags(DOC, columns)
    pii = spec_pii(SPECS)
    for domain in sorted({s.domain for s in SPECS}):
        own = {k for k in tags if k[0] == f"staged_{domain}"}
        analyst = reachable(DOC, SETTINGS.role_arn(f"{domain}-analyst"), tags)
        assert analyst == own - pii, domain
        if own & pii:
            assert reachable(DOC, SETTINGS.role_arn(f"{domain}-pii"), tags) == own, domain
        else:
            assert SETTINGS.role_name(f"{domain}-pii") not in DOC["principals"]


def test_tags_used_are_declared_and_grants_read_only_for_analysts():
    declared = {t["key"]: set(t["values"]) for t in DOC["lf_tags"]}
    for a in DOC["lf_tag_assignments"]:
        assert all(t["value"] in declared[t["key"]] for t in a["lf_tags"])
    platform = SETTINGS.role_arn("platform")
    for g in DOC["lf_grants"]:
        for e in g.get("lf_tag_policy", {}).get("expression", []):
            assert set(e["values"]) <= declared[e["key"]]
        if g["principal"] != platform:
            assert set(g["permissions"]) <= {"DESCRIBE", "SELECT"}
            assert {"key": "zone", "values": ["staged", "curated"]} in g["lf_tag_policy"]["expression"]


def _statements(policy: dict, effect: str) -> list[dict]:
    return [s for s in policy["Statement"] if s["Effect"] == effect]


@pytest.mark.parametrize("name", [n for n in DOC["iam_policies"] if not n.endswith("-platform")])
def test_reader_policies_only_read_their_domains_tables(name):
    policy = DOC["iam_policies"][name]
    domain = DOC["principals"][name]["domain"]
    actions = {a for s in _statements(policy, "Allow") for a in s["Action"]}
    assert all(re.fullmatch(r"s3:(GetObject|ListBucket|GetBucketLocation)|glue:(Get|BatchGet)\w+|athena:\w+"
                            r"|lakeformation:GetDataAccess", a) for a in actions), actions
    objects = [r for s in _statements(policy, "Allow") for r in s["Resource"] if isinstance(s["Resource"], list)
               and r.startswith("arn:aws:s3:::")]
    assert objects == [f"arn:aws:s3:::quayside-lake/warehouse/{z}_{domain}/*" for z in ("staged", "curated")]
    bucket = "arn:aws:s3:::quayside-lake/"
    for key in ["raw/x", "landing/x", "quarantine/x", "warehouse/raw/manifest/x", "warehouse/staged/loads/x",
                f"warehouse/staged_{domain}x/t/x", f"warehouse/prepared_{domain}/t/x", "warehouse/staged_zz/t/x"]:
        assert not any(iam_match(r, bucket + key) for r in objects), key
    listing = next(s for s in policy["Statement"] if s["Action"] == ["s3:ListBucket"])
    assert listing["Condition"] == {"StringLike": {"s3:prefix": [f"warehouse/{z}_{domain}/*"
                                                                 for z in ("staged", "curated")]}}
    denied = [r for s in _statements(policy, "Deny") for r in s["Resource"]]
    pii_tables = [t for (ns, t) in pii_columns(SPECS) if ns == f"staged_{domain}"]
    if name.endswith("-analyst"):
        assert denied == [bucket + table_prefix(f"staged_{domain}", t) + "*" for t in pii_tables]
    else:
        assert denied == [] and pii_tables


def test_platform_policy_keeps_placed_raw_files_immutable():
    policy = DOC["iam_policies"]["quayside-platform"]
    deny = _statements(policy, "Deny")
    assert len(deny) == 1 and set(deny[0]["Action"]) == {"s3:DeleteObject", "s3:DeleteObjectVersion"}
    pattern = deny[0]["Resource"]
    bucket = "arn:aws:s3:::quayside-lake/"
    for key in ["raw/courts/cases/ingest_date=2026-11-01/cases.csv",
                "raw/legal_aid/payments/ingest_date=2026-01-01/a.b.12ab.csv"]:
        assert iam_match(pattern, bucket + key), key
    # the ingest's scratch copies and pyarrow's folder markers may go
    for key in ["raw/_incoming/0123abcd", "raw/courts/cases/ingest_date=2026-11-01/", "landing/courts/x.csv",
                "warehouse/staged_courts/cases/data/x.parquet"]:
        assert not iam_match(pattern, bucket + key), key
    allowed = {a for s in _statements(policy, "Allow") for a in s["Action"]}
    assert {"s3:GetObject", "s3:PutObject", "s3:DeleteObject", "glue:CreateTable", "glue:UpdateTable",
            "athena:StartQueryExecution", "athena:GetQueryExecution"} <= allowed
    writes = next(s for s in policy["Statement"] if "s3:PutObject" in s["Action"])
    assert writes["Resource"] == [f"{bucket}{p}/*" for p in ("landing", "raw", "quarantine", "warehouse",
                                                              "athena-results")]


def test_policy_documents_fit_iam_and_carry_no_secrets():
    for policy in DOC["iam_policies"].values():
        assert len(re.sub(r"\s", "", json.dumps(policy))) <= 6144
        assert all(re.fullmatch(r"[A-Za-z0-9]+", s["Sid"]) for s in policy["Statement"])
    text = json.dumps(DOC)
    assert "secret" not in text.lower() and "AKIA" not in text


def test_dbt_athena_writes_marts_where_the_policies_read():
    profile = yaml.safe_load((DATASETS.parents[1] / "dbt_project" / "profiles.yml").read_text())
    athena = profile["quayside"]["outputs"]["athena"]
    assert athena["s3_data_naming"] == "schema_table"  # <s3_data_dir>/<schema>/<table>/
    assert athena["s3_data_dir"].endswith("/warehouse/")


@pytest.mark.parametrize("field, value, message", [
    ("bucket", "Quayside", "not a valid S3 bucket name"),
    ("bucket", "lake/*", "not a valid S3 bucket name"),
    ("bucket", "a..b", "not a valid S3 bucket name"),
    ("bucket", "192.168.1.1", "not a valid S3 bucket name"),
    ("bucket", "", "a bucket is needed"),
    ("account_id", "1234", "12 digits"),
    ("account_id", "11112222333*", "12 digits"),
    ("region", "eu-west-2:*", "not an AWS region"),
    ("region", "EU", "not an AWS region"),
    ("catalog_id", "x", "Glue catalog id"),
    ("analyst_workgroup", "team/*", "Athena workgroup"),
    ("platform_workgroup", "", "Athena workgroup"),
    ("prefix", "a/b", "prefix"),
])
def test_settings_going_into_arns_are_validated(field, value, message):
    with pytest.raises(AccessError, match=message):
        AccessSettings(**({"bucket": "quayside-lake", "account_id": "111122223333"} | {field: value}))


def test_settings_come_from_the_projects_environment():
    env = {"QUAYSIDE_BUCKET": "lake-prod", "AWS_REGION": "us-gov-west-1", "QUAYSIDE_ATHENA_WORKGROUP": "lake",
           "QUAYSIDE_GLUE_CATALOG_ID": "999988887777", "AWS_ACCOUNT_ID": "111122223333"}
    s = AccessSettings.from_env(env, analyst_workgroup="analysts-{domain}", bucket=None)
    assert (s.bucket, s.region, s.partition, s.platform_workgroup) == ("lake-prod", "us-gov-west-1", "aws-us-gov",
                                                                         "lake")
    statements = {st["Sid"]: st for st in generate(SPECS, s)["iam_policies"]["quayside-prisons-analyst"]["Statement"]}
    athena = statements["QueryWithAthena"]
    assert athena["Resource"] == "arn:aws-us-gov:athena:us-gov-west-1:111122223333:workgroup/analysts-prisons"
    glue = statements["ReadCatalog"]
    assert glue["Resource"][0] == "arn:aws-us-gov:glue:us-gov-west-1:999988887777:catalog"
    with pytest.raises(AccessError, match="account id is needed"):
        AccessSettings.from_env({"QUAYSIDE_BUCKET": "lake-prod"})
    long_domain = [SPECS[0].model_copy(update={"domain": "d" * 50})]  # quayside-ddd…-analyst: over 64
    with pytest.raises(AccessError, match="64 characters"):
        generate(long_domain, SETTINGS)


def test_cli_writes_terraform_friendly_files(tmp_path, capsys):
    args = ["access", "--bucket", "quayside-lake", "--account-id", "111122223333", "--datasets", str(DATASETS)]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == DOC
    out = tmp_path / "access"
    (out / "iam").mkdir(parents=True)
    (out / "iam" / "quayside-gone-analyst.json").write_text("{}")  # a principal that no longer exists
    (out / "principals.json").write_text(json.dumps({"quayside-gone-analyst": {}}))
    (out / "iam" / "mine.json").write_text("{}")  # not the generator's: left alone
    assert main(args + ["--out", str(out)]) == 0
    assert sorted(p.name for p in (out / "iam").iterdir()) == sorted([f"{n}.json" for n in DOC["iam_policies"]]
                                                                     + ["mine.json"])
    for name, principal in json.loads((out / "principals.json").read_text()).items():
        assert json.loads((out / principal["policy"]).read_text()) == DOC["iam_policies"][name]
    lf = json.loads((out / "lakeformation.json").read_text())
    assert lf == {k: DOC[k] for k in ("lf_resources", "lf_tags", "lf_tag_assignments", "lf_grants")}
    assert main(["access", "--bucket", "Bad_Bucket", "--account-id", "111122223333"]) == 2
    assert "not a valid S3 bucket name" in capsys.readouterr().err
