"""Access control generated from the dataset specs: IAM policies and Lake Formation LF-tags/grants.

`quayside access` prints (or writes, one file per policy) per domain:

- `<prefix>-<domain>-analyst`: an IAM policy reading the Iceberg tables of `staged_<domain>` and
  `curated_<domain>` (S3 objects under `warehouse/<namespace>/`, listing limited to those
  prefixes, their Glue databases and tables) and querying in an Athena workgroup. Nothing in
  `landing/`, `raw/`, `quarantine/`, no writes. Tables with a `pii: true` column are denied on S3
  altogether (Parquet files and Iceberg manifests hold the values and their min/max): analysts
  read those through Lake Formation (Athena), which leaves out the PII columns.
- `<prefix>-<domain>-pii` (domains with PII columns only): the same, PII tables included.
- `<prefix>-platform`: the code location's role: S3 on landing/raw/quarantine/warehouse (+ Athena
  results), Glue create/update, Athena for table maintenance, and an explicit Deny of deletes on
  the raw zone's placed files.
- Lake Formation: LF-tags `domain`, `zone` and `pii`, assigned to the databases (`pii=false`,
  inherited by every table and column) and `pii=true` to the spec's PII columns; tag-based grants
  so analysts SELECT only `pii=false` columns and the `-pii` principal both.

Where tables live: `Lake.ensure_namespace` gives a namespace the location
`s3://<bucket>/warehouse/<namespace>`, so pyiceberg puts a table at
`warehouse/<namespace>/<table>/`; dbt-athena (profile `s3_data_naming: schema_table`,
`s3_data_dir: s3://<bucket>/warehouse/`) writes the curated marts to the same layout.

Plain Python, no AWS calls, nothing secret in the output: every identifier put into an ARN is
validated here (domains and table/column names already are, by `quayside.specs`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from quayside.specs import DatasetSpec

WAREHOUSE = "warehouse"
ANALYST_ZONES = ("staged", "curated")  # namespaces <zone>_<domain> an analyst of <domain> reads
PLATFORM_PREFIXES = ("landing", "raw", "quarantine", WAREHOUSE, "athena-results")
PLATFORM_DELETES = ("landing", WAREHOUSE)  # after_ingest delete/archive; Iceberg maintenance
# Raw files are placed at raw/<domain>/<name>/ingest_date=<day>/<file> and never deleted. The
# ingest copies into raw/_incoming/<uuid> first and moves (on S3: copy + delete) the verified copy,
# so the Deny covers the placed files, not the scratch copies (nor pyarrow's folder markers).
RAW_PLACED_FILES = "raw/*/*/ingest_date=*/?*"
# Glue databases the platform creates and maintains (Lake.ensure_namespace, dbt, raw Hive tables).
PLATFORM_DATABASES = ("raw", "raw_*", "quarantine", "staged", "staged_*", "prepared_*", "curated", "curated_*")
MAX_POLICY_CHARS = 6144  # IAM managed policy limit, whitespace not counted

S3_READ = ["s3:GetObject"]
GLUE_READ = ["glue:BatchGetPartition", "glue:GetDatabase", "glue:GetDatabases", "glue:GetPartition",
             "glue:GetPartitions", "glue:GetTable", "glue:GetTables"]
GLUE_WRITE = ["glue:BatchCreatePartition", "glue:CreateDatabase", "glue:CreatePartition", "glue:CreateTable",
              "glue:DeleteTable", "glue:UpdatePartition", "glue:UpdateTable"]
ATHENA_QUERY = ["athena:BatchGetQueryExecution", "athena:GetQueryExecution", "athena:GetQueryResults",
                "athena:GetWorkGroup", "athena:ListQueryExecutions", "athena:StartQueryExecution",
                "athena:StopQueryExecution"]
LF_DATABASE_READ = ["DESCRIBE"]
LF_TABLE_READ = ["DESCRIBE", "SELECT"]

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_ACCOUNT = re.compile(r"^\d{12}$")
_REGION = re.compile(r"^[a-z]{2,4}(-[a-z]+)+-\d{1,2}$")
_WORKGROUP = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_NAME_PREFIX = re.compile(r"^[A-Za-z0-9+=,.@_-]{1,32}$")
_PARTITIONS = (("cn-", "aws-cn"), ("us-gov-", "aws-us-gov"), ("us-isob-", "aws-iso-b"), ("us-iso-", "aws-iso"),
               ("eusc-", "aws-eusc"))


class AccessError(ValueError):
    """A setting that cannot go into an ARN or a policy name."""


def check_bucket(value: str) -> str:
    """S3 general-purpose bucket naming rules (the ones that keep an ARN unambiguous)."""
    if (not _BUCKET.match(value or "") or ".." in value or ".-" in value or "-." in value
            or re.fullmatch(r"\d+\.\d+\.\d+\.\d+", value) or value.startswith(("xn--", "sthree-"))
            or value.endswith(("-s3alias", "--ol-s3", "--x-s3"))):
        raise AccessError(f"bucket {value!r} is not a valid S3 bucket name (3-63 of a-z 0-9 . -)")
    return value


def check_account(value: str, what: str = "account id") -> str:
    if not _ACCOUNT.match(value or ""):
        raise AccessError(f"{what} {value!r} must be 12 digits")
    return value


def check_region(value: str) -> str:
    if not _REGION.match(value or ""):
        raise AccessError(f"region {value!r} is not an AWS region name (e.g. eu-west-2)")
    return value


def check_workgroup(value: str) -> str:
    if not _WORKGROUP.match(value or ""):
        raise AccessError(f"Athena workgroup {value!r} must be 1-128 of A-Z a-z 0-9 . _ -")
    return value


@dataclass(frozen=True)
class AccessSettings:
    bucket: str
    account_id: str
    region: str = "eu-west-2"
    # Athena workgroup of a domain's analysts; '{domain}' is replaced by the domain
    analyst_workgroup: str = "primary"
    platform_workgroup: str = "primary"  # table maintenance (QUAYSIDE_ATHENA_WORKGROUP)
    catalog_id: str = ""  # account of the Glue Data Catalog; default: account_id
    prefix: str = "quayside"  # of policy and role names

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **given: str | None) -> AccessSettings:
        """The project's variables (QUAYSIDE_BUCKET, AWS_REGION, QUAYSIDE_ATHENA_WORKGROUP,
        QUAYSIDE_GLUE_CATALOG_ID; AWS_ACCOUNT_ID as botocore reads it), overridden by `given`."""
        env = os.environ if env is None else env
        workgroup = env.get("QUAYSIDE_ATHENA_WORKGROUP", "primary")
        defaults = {
            "bucket": env.get("QUAYSIDE_BUCKET", ""),
            "account_id": env.get("AWS_ACCOUNT_ID", ""),
            "region": env.get("AWS_REGION", env.get("AWS_DEFAULT_REGION", "eu-west-2")),
            "analyst_workgroup": workgroup,
            "platform_workgroup": workgroup,
            "catalog_id": env.get("QUAYSIDE_GLUE_CATALOG_ID", ""),
            "prefix": "quayside",
        }
        return cls(**(defaults | {k: v for k, v in given.items() if v is not None}))

    def __post_init__(self) -> None:
        if not self.bucket:
            raise AccessError("a bucket is needed: --bucket or QUAYSIDE_BUCKET")
        if not self.account_id:
            raise AccessError("an account id is needed: --account-id or AWS_ACCOUNT_ID")
        check_bucket(self.bucket)
        check_account(self.account_id)
        check_region(self.region)
        if self.catalog_id:
            check_account(self.catalog_id, "Glue catalog id")
        check_workgroup(self.analyst_workgroup.replace("{domain}", "d"))
        check_workgroup(self.platform_workgroup)
        if not _NAME_PREFIX.match(self.prefix):
            raise AccessError(f"prefix {self.prefix!r} must be 1-32 of A-Z a-z 0-9 + = , . @ _ -")

    @property
    def partition(self) -> str:
        return next((p for start, p in _PARTITIONS if self.region.startswith(start)), "aws")

    # --- ARNs ------------------------------------------------------------------------------
    def bucket_arn(self) -> str:
        return f"arn:{self.partition}:s3:::{self.bucket}"

    def object_arn(self, key_pattern: str) -> str:
        return f"{self.bucket_arn()}/{key_pattern}"

    def glue_arn(self, resource: str) -> str:
        return f"arn:{self.partition}:glue:{self.region}:{self.catalog_id or self.account_id}:{resource}"

    def workgroup_arn(self, workgroup: str) -> str:
        return f"arn:{self.partition}:athena:{self.region}:{self.account_id}:workgroup/{check_workgroup(workgroup)}"

    def role_name(self, role: str) -> str:
        name = f"{self.prefix}-{role}"
        if len(name) > 64:
            raise AccessError(f"role name {name!r} is longer than IAM's 64 characters: use a shorter --prefix")
        return name

    def role_arn(self, role: str) -> str:
        return f"arn:{self.partition}:iam::{self.account_id}:role/{self.role_name(role)}"


def analyst_namespaces(domain: str) -> list[str]:
    return [f"{zone}_{domain}" for zone in ANALYST_ZONES]


def table_prefix(namespace: str, table: str = "") -> str:
    """Key prefix of a namespace's (or one table's) Iceberg files in the bucket."""
    return f"{WAREHOUSE}/{namespace}/" + (f"{table}/" if table else "")


def pii_columns(specs: list[DatasetSpec]) -> dict[tuple[str, str], list[str]]:
    """(namespace, table) -> its PII columns, for every staged table holding one (CDC history too)."""
    out: dict[tuple[str, str], list[str]] = {}
    for spec in sorted(specs, key=lambda s: s.key):
        columns = [c.name for c in spec.columns if c.pii]
        if columns:
            out[(spec.staged_namespace, spec.name)] = columns
            if spec.load_mode == "cdc":
                out[(spec.staged_namespace, spec.history_table)] = columns
    return out


def _policy(statements: list[dict]) -> dict:
    doc = {"Version": "2012-10-17", "Statement": statements}
    size = len(re.sub(r"\s", "", json.dumps(doc)))
    if size > MAX_POLICY_CHARS:
        raise AccessError(f"a policy of {size} characters exceeds IAM's {MAX_POLICY_CHARS}")
    return doc


def reader_policy(settings: AccessSettings, domain: str, pii_tables: list[tuple[str, str]]) -> dict:
    """Read-only access to a domain's staged and curated tables. `pii_tables` are denied on S3
    (an analyst's policy); empty for the `-pii` principal's."""
    namespaces = analyst_namespaces(domain)
    s = settings
    statements = [
        {"Sid": "ReadTableData", "Effect": "Allow", "Action": S3_READ,
         "Resource": [s.object_arn(table_prefix(ns) + "*") for ns in namespaces]},
        {"Sid": "ListTableData", "Effect": "Allow", "Action": ["s3:ListBucket"], "Resource": s.bucket_arn(),
         "Condition": {"StringLike": {"s3:prefix": [table_prefix(ns) + "*" for ns in namespaces]}}},
        {"Sid": "BucketLocation", "Effect": "Allow", "Action": ["s3:GetBucketLocation"], "Resource": s.bucket_arn()},
    ]
    if pii_tables:
        statements.append(
            {"Sid": "PiiTablesOnlyThroughLakeFormation", "Effect": "Deny", "Action": S3_READ,
             "Resource": [s.object_arn(table_prefix(ns, t) + "*") for ns, t in pii_tables]})
    statements += [
        {"Sid": "ReadCatalog", "Effect": "Allow", "Action": GLUE_READ,
         "Resource": [s.glue_arn("catalog")] + [s.glue_arn(f"database/{ns}") for ns in namespaces]
                     + [s.glue_arn(f"table/{ns}/*") for ns in namespaces]},
        {"Sid": "LakeFormationDataAccess", "Effect": "Allow", "Action": ["lakeformation:GetDataAccess"],
         "Resource": "*"},
        {"Sid": "QueryWithAthena", "Effect": "Allow", "Action": ATHENA_QUERY,
         "Resource": s.workgroup_arn(s.analyst_workgroup.replace("{domain}", domain))},
    ]
    return _policy(statements)


def platform_policy(settings: AccessSettings) -> dict:
    """The code location's role (webserver, daemon, runs): what `Lake` on the aws profile, the
    ingest, dbt-athena and table maintenance call."""
    s = settings
    databases = [s.glue_arn(f"database/{db}") for db in PLATFORM_DATABASES]
    tables = [s.glue_arn(f"table/{db}/*") for db in PLATFORM_DATABASES]
    return _policy([
        {"Sid": "ListLake", "Effect": "Allow", "Action": ["s3:GetBucketLocation", "s3:ListBucket"],
         "Resource": s.bucket_arn()},
        {"Sid": "ReadWriteZones", "Effect": "Allow",
         "Action": ["s3:AbortMultipartUpload", "s3:GetObject", "s3:PutObject"],
         "Resource": [s.object_arn(f"{p}/*") for p in PLATFORM_PREFIXES]},
        {"Sid": "DeleteWhereFilesMove", "Effect": "Allow", "Action": ["s3:DeleteObject"],
         "Resource": [s.object_arn(f"{p}/*") for p in PLATFORM_DELETES]
                     + [s.object_arn("raw/_incoming/*")]},
        {"Sid": "RawIsImmutable", "Effect": "Deny", "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
         "Resource": s.object_arn(RAW_PLACED_FILES)},
        {"Sid": "Catalog", "Effect": "Allow", "Action": sorted(GLUE_READ + GLUE_WRITE),
         "Resource": [s.glue_arn("catalog")] + databases + tables},
        {"Sid": "LakeFormationDataAccess", "Effect": "Allow", "Action": ["lakeformation:GetDataAccess"],
         "Resource": "*"},
        {"Sid": "TableMaintenance", "Effect": "Allow",
         "Action": ["athena:GetQueryExecution", "athena:GetQueryResults", "athena:GetWorkGroup",
                    "athena:StartQueryExecution", "athena:StopQueryExecution"],
         "Resource": s.workgroup_arn(s.platform_workgroup)},
    ])


def _tag(key: str, *values: str) -> dict:
    return {"key": key, "values": list(values)}


def lake_formation(settings: AccessSettings, specs: list[DatasetSpec]) -> dict:
    """LF-tags, their assignments and tag-based grants (shaped like Terraform's
    aws_lakeformation_lf_tag / _resource_lf_tags / _permissions arguments)."""
    domains = sorted({s.domain for s in specs})
    pii = pii_columns(specs)
    pii_domains = {s.domain for s in specs if any(c.pii for c in s.columns)}
    assignments: list[dict] = []
    for domain in domains:
        for zone, ns in zip(ANALYST_ZONES, analyst_namespaces(domain)):
            assignments.append({"database": {"name": ns},
                                "lf_tags": [{"key": "domain", "value": domain}, {"key": "zone", "value": zone},
                                            {"key": "pii", "value": "false"}]})
    for (ns, table), columns in pii.items():
        assignments.append({"table_with_columns": {"database_name": ns, "name": table, "column_names": columns},
                            "lf_tags": [{"key": "pii", "value": "true"}]})

    def grants(principal: str, domain_values: list[str], pii_values: tuple[str, ...] | None) -> list[dict]:
        scope = [_tag("domain", *domain_values), _tag("zone", *ANALYST_ZONES)]
        return [
            {"principal": principal, "permissions": LF_DATABASE_READ,
             "lf_tag_policy": {"resource_type": "DATABASE", "expression": scope}},
            {"principal": principal, "permissions": LF_TABLE_READ,
             "lf_tag_policy": {"resource_type": "TABLE",
                               "expression": scope + ([_tag("pii", *pii_values)] if pii_values else [])}},
        ]

    lf_grants: list[dict] = []
    for domain in domains:
        lf_grants += grants(settings.role_arn(f"{domain}-analyst"), [domain], ("false",))
        if domain in pii_domains:
            lf_grants += grants(settings.role_arn(f"{domain}-pii"), [domain], ("false", "true"))
    platform = settings.role_arn("platform")
    lf_grants += [
        {"principal": platform, "permissions": ["CREATE_DATABASE"], "catalog_resource": True},
        {"principal": platform, "permissions": ["DATA_LOCATION_ACCESS"],
         "data_location": {"arn": settings.object_arn(WAREHOUSE)}},
        {"principal": platform, "permissions": ["ALTER", "CREATE_TABLE", "DESCRIBE", "DROP"],
         "lf_tag_policy": {"resource_type": "DATABASE", "expression": [_tag("domain", *domains)]}},
        {"principal": platform, "permissions": ["ALTER", "DELETE", "DESCRIBE", "DROP", "INSERT", "SELECT"],
         "lf_tag_policy": {"resource_type": "TABLE", "expression": [_tag("domain", *domains)]}},
    ]
    return {
        "lf_resources": [{"arn": settings.object_arn(WAREHOUSE)}],
        "lf_tags": [_tag("domain", *domains), _tag("zone", *ANALYST_ZONES), _tag("pii", "false", "true")],
        "lf_tag_assignments": assignments,
        "lf_grants": lf_grants,
    }


def generate(specs: list[DatasetSpec], settings: AccessSettings) -> dict:
    """The whole access document: principals, IAM policy documents and Lake Formation."""
    domains = sorted({s.domain for s in specs})
    pii = pii_columns(specs)
    principals: dict[str, dict] = {}
    policies: dict[str, dict] = {}
    for domain in domains:
        tables = [key for key in pii if key[0] == f"staged_{domain}"]
        roles = [(f"{domain}-analyst", tables, "analysts: every non-PII column")]
        if tables:
            roles.append((f"{domain}-pii", [], "PII readers: every column"))
        for role, denied, about in roles:
            name = settings.role_name(role)
            policies[name] = reader_policy(settings, domain, denied)
            principals[name] = {"role_arn": settings.role_arn(role), "policy": f"iam/{name}.json",
                                "domain": domain, "description": f"{domain} {about}"}
    name = settings.role_name("platform")
    policies[name] = platform_policy(settings)
    principals[name] = {"role_arn": settings.role_arn("platform"), "policy": f"iam/{name}.json", "domain": "",
                        "description": "the code location: webserver, daemon and runs"}
    return {
        "settings": {"bucket": settings.bucket, "account_id": settings.account_id, "region": settings.region,
                     "partition": settings.partition, "catalog_id": settings.catalog_id or settings.account_id},
        "principals": principals,
        "iam_policies": policies,
        **lake_formation(settings, specs),
    }


def _dump(value: object) -> str:
    return json.dumps(value, indent=2) + "\n"


def write_folder(document: dict, out: Path) -> list[Path]:
    """`out/iam/<policy>.json` (a policy document each, for `aws_iam_policy`'s `policy = file(...)`),
    `out/principals.json` and `out/lakeformation.json`. Policy files this generator wrote before for
    principals that no longer exist are removed; nothing else in `out` is touched."""
    iam = out / "iam"
    iam.mkdir(parents=True, exist_ok=True)
    written = []
    for name, policy in document["iam_policies"].items():
        (path := iam / f"{name}.json").write_text(_dump(policy))
        written.append(path)
    previous = out / "principals.json"
    if previous.exists():
        try:
            stale = set(json.loads(previous.read_text())) - set(document["principals"])
        except (ValueError, TypeError):
            stale = set()
        for name in stale:
            if isinstance(name, str) and re.fullmatch(r"[A-Za-z0-9+=,@_-][A-Za-z0-9+=,.@_-]*", name):
                (iam / f"{name}.json").unlink(missing_ok=True)
    lf = {k: document[k] for k in ("lf_resources", "lf_tags", "lf_tag_assignments", "lf_grants")}
    for path, value in ((previous, document["principals"]), (out / "lakeformation.json", lf)):
        path.write_text(_dump(value))
        written.append(path)
    return written
