"""Where a dataset's data comes from: named connections, each opened as a Storage (files: S3,
file share, SFTP, Azure Blob) or an Extractor (a database table, an HTTP API).

A dataset's `source.connection` names one; `landing` (the lake's own landing zone, where pushed
files and the demo arrive) needs no declaration. Connections are declared in
`lake_assets/connections.yaml`; settings written `env:NAME` come from the environment, so secrets
never sit in the file. Listing, the stable-size rule, checksums and the after-ingest action work
the same on every kind (lake-core `land` and `watch.poll` take any Storage).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from quayside.extract import Extractor
from quayside.lake import Storage, local_storage, s3_storage
from quayside.specs import DatasetSpec, check_identifier, check_relative_path

LANDING = "landing"


class _Connection(BaseModel):
    model_config = ConfigDict(extra="forbid")


Prefix = Annotated[str, AfterValidator(lambda v: check_relative_path(v.strip("/"), "prefix"))]


class S3Connection(_Connection):
    """A bucket, usually in another account: its own region/endpoint, credentials from the
    standard AWS chain or given keys, optionally through an assumed role (cross-account)."""

    type: Literal["s3"]
    bucket: str
    prefix: Prefix = ""
    region: str = "eu-west-2"
    endpoint_url: str = ""
    role_arn: str = ""
    access_key_id: str = ""
    secret_access_key: str = ""


class FileShareConnection(_Connection):
    """A Windows/SMB or NFS share mounted at a path on the machine that runs Quayside."""

    type: Literal["fileshare"]
    root: str

    @field_validator("root")
    @classmethod
    def _root(cls, v: str) -> str:
        if not Path(v).is_absolute() or ".." in Path(v).parts:
            raise ValueError(f"{v!r} must be an absolute path without '..'")
        return v


class SftpConnection(_Connection):
    """An SFTP drop (a supplier's server, or AWS Transfer Family): key authentication, and the
    host key pinned in `known_hosts` (unknown or changed keys are refused)."""

    type: Literal["sftp"]
    host: str
    port: int = 22
    username: str
    known_hosts: str
    private_key_path: str = ""
    private_key: str = ""  # the key itself, e.g. from a secret in the environment
    root: str = "."

    @field_validator("known_hosts")
    @classmethod
    def _known_hosts(cls, v: str) -> str:
        if not Path(v).is_file():
            raise ValueError(f"{v!r} is not a file: pin the server's host key in a known_hosts file")
        return v

    def load_key(self):
        import io

        import paramiko

        if self.private_key_path:
            return paramiko.PKey.from_path(self.private_key_path)
        for kind in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
            try:
                return kind.from_private_key(io.StringIO(self.private_key))
            except paramiko.SSHException:
                continue
        raise ValueError("sftp connection: private_key is not an Ed25519, ECDSA or RSA private key")


class AzureBlobConnection(_Connection):
    """An Azure Blob Storage container: a connection string, or an account URL plus a credential
    (account key or SAS token); both usually from the environment."""

    type: Literal["azure_blob"]
    container: str
    prefix: Prefix = ""
    connection_string: str = ""
    account_url: str = ""
    credential: str = ""

    def client(self):
        from azure.storage.blob import ContainerClient, LinearRetry

        # The SDK's default retries an unreachable account for over a minute; a sensor tick can't wait that long.
        policy = {"retry_policy": LinearRetry(backoff=2, retry_total=3, random_jitter_range=1),
                  "connection_timeout": 10, "read_timeout": 120}
        if self.connection_string:
            return ContainerClient.from_connection_string(self.connection_string, self.container, **policy)
        if not self.account_url:
            raise ValueError("azure_blob connection: give connection_string, or account_url and credential")
        return ContainerClient(self.account_url, self.container, credential=self.credential or None, **policy)


class DatabaseConnection(_Connection):
    """A relational database by SQLAlchemy URL (PostgreSQL tested: postgresql+psycopg://…); the
    password can sit apart from the URL, in the environment. Driver options such as
    `connect_timeout=10` go in the URL's query string."""

    type: Literal["database"]
    url: str
    password: str = ""

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(v)
        except ArgumentError as exc:
            raise ValueError(f"not a SQLAlchemy URL: {exc}") from None
        return v


class HttpApiConnection(_Connection):
    """A JSON HTTP API: a base URL and a bearer token or an API key sent in a header."""

    type: Literal["http_api"]
    base_url: str
    token: str = ""
    api_key: str = ""
    api_key_header: str = "X-API-Key"
    timeout_seconds: float = 30.0
    max_retries: int = 5

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"{v!r} must be an http(s) URL")
        return v


KINDS = {"s3": S3Connection, "fileshare": FileShareConnection, "sftp": SftpConnection,
         "azure_blob": AzureBlobConnection, "database": DatabaseConnection, "http_api": HttpApiConnection}
# Kinds a dataset reads with an extraction (source.table / source.api) rather than as files.
EXTRACT_KINDS = {"database": "table", "http_api": "api"}
Connection = Annotated[S3Connection | FileShareConnection | SftpConnection | AzureBlobConnection
                       | DatabaseConnection | HttpApiConnection, Field(discriminator="type")]
_CONNECTION = TypeAdapter(Connection)


def parse_connection(name: str, settings: dict) -> Connection:
    check_identifier(name, "connection name")
    try:
        return _CONNECTION.validate_python(settings)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ValueError(f"connection {name!r}: {problems}") from None


def load_connections(path: Path) -> dict[str, dict]:
    """The raw settings per connection name (values may still be `env:NAME` references)."""
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{path}: expected a mapping of connection name -> settings")
    if LANDING in data:
        raise ValueError(f"{path}: '{LANDING}' is the lake's own landing zone and cannot be redefined")
    for name, settings in data.items():  # validate now, with env references as placeholders
        parse_connection(name, {k: ("x" if isinstance(v, str) and v.startswith("env:") else v)
                                for k, v in settings.items()})
    return data


def source_mismatch(spec: DatasetSpec, kind: str) -> str | None:
    """Why a dataset's source cannot read from a connection of `kind`, or None if it can."""
    needs = EXTRACT_KINDS.get(kind)
    has = "table" if spec.source.table else "api" if spec.source.api else None
    if needs == has:
        return None
    if needs:
        return f"{spec.key}: connection {spec.source.connection!r} is a {kind}: the source needs a '{needs}' block"
    return f"{spec.key}: connection {spec.source.connection!r} holds files ({kind}): drop the source's '{has}' block"


def open_connection(connection: Connection) -> Storage | Extractor:
    """A file connection as Storage; a database or API connection as an Extractor."""
    if isinstance(connection, DatabaseConnection):
        from quayside.database import Database

        return Database(connection.url, connection.password)
    if isinstance(connection, HttpApiConnection):
        from quayside.http_api import HttpApi

        return HttpApi(connection.base_url, connection.token, connection.api_key, connection.api_key_header,
                       connection.timeout_seconds, connection.max_retries)
    if isinstance(connection, FileShareConnection):
        return local_storage(Path(connection.root))
    if isinstance(connection, AzureBlobConnection):
        from quayside.azure_blob import AzureBlobStorage

        return AzureBlobStorage(connection.client(), connection.prefix)
    if isinstance(connection, SftpConnection):
        from quayside.sftp import SftpStorage

        return SftpStorage(connection.host, connection.port, connection.username, connection.load_key(),
                           connection.known_hosts, connection.root)
    credentials = {}
    if connection.access_key_id:
        credentials = {"access_key": connection.access_key_id, "secret_key": connection.secret_access_key}
    if connection.role_arn:
        import boto3

        sts = boto3.client("sts", region_name=connection.region, endpoint_url=connection.endpoint_url or None,
                           aws_access_key_id=credentials.get("access_key"),
                           aws_secret_access_key=credentials.get("secret_key"))
        assumed = sts.assume_role(RoleArn=connection.role_arn, RoleSessionName="quayside-ingest")["Credentials"]
        credentials = {"access_key": assumed["AccessKeyId"], "secret_key": assumed["SecretAccessKey"],
                       "session_token": assumed["SessionToken"]}
    return s3_storage(connection.bucket, connection.prefix, connection.region, connection.endpoint_url, credentials)
