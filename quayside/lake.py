"""The lake: zone storage (local folder | S3), the Iceberg catalog (SQLite | Glue) and DuckDB views.

Which profile is used is decided by `LakeSettings` alone; nothing else in Quayside knows
whether it runs on a laptop or in AWS.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import import_module
from pathlib import Path
from typing import BinaryIO, Literal

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NamespaceAlreadyExistsError, NoSuchTableError
from pyiceberg.table import Table

from quayside.iceberg_files import live_rows
from quayside.specs import check_identifier, check_relative_path

ZONES = ("landing", "raw", "quarantine", "warehouse")
CHUNK = 8 * 1024 * 1024
# Parquet writers build a column's dictionary until it reaches this size, then write the column plain.
# Iceberg's default, 2 MB, lets a column of unique values (ids, timestamps) fill a dictionary
# nobody uses: staging wrote 300k-row chunks of benchmark data in 149 ms at 2 MB, 89 ms at 512 KB,
# and the files came out 19% smaller; columns of up to ~64k distinct 8-byte values keep theirs.
PARQUET_DICTIONARY_BYTES = 512 * 1024
TABLE_DEFAULTS = {"write.parquet.dict-size-bytes": str(PARQUET_DICTIONARY_BYTES)}
DEFAULT_HOME = Path(__file__).resolve().parent.parent / ".quayside"


@dataclass(frozen=True)
class LakeSettings:
    """Where the lake lives. `from_env` is the one place the profile is chosen."""

    profile: Literal["local", "aws"] = "local"
    home: str = str(DEFAULT_HOME)
    bucket: str = ""
    region: str = "eu-west-2"
    endpoint_url: str = ""  # S3 + Glue endpoint override (moto in tests); empty = AWS
    glue_catalog_id: str = ""
    athena_workgroup: str = "primary"  # runs table maintenance on the aws profile (as dbt's athena target)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> LakeSettings:
        env = os.environ if env is None else env
        return cls(
            profile=env.get("QUAYSIDE_PROFILE", "local"),  # type: ignore[arg-type]
            home=env.get("QUAYSIDE_HOME", str(DEFAULT_HOME)),
            bucket=env.get("QUAYSIDE_BUCKET", ""),
            region=env.get("AWS_REGION", env.get("AWS_DEFAULT_REGION", "eu-west-2")),
            endpoint_url=env.get("QUAYSIDE_AWS_ENDPOINT_URL", ""),
            glue_catalog_id=env.get("QUAYSIDE_GLUE_CATALOG_ID", ""),
            athena_workgroup=env.get("QUAYSIDE_ATHENA_WORKGROUP", "primary"),
        )

    def __post_init__(self) -> None:
        if self.profile not in ("local", "aws"):
            raise ValueError(f"QUAYSIDE_PROFILE must be 'local' or 'aws', not {self.profile!r}")
        if self.profile == "aws" and not self.bucket:
            raise ValueError("the aws profile needs QUAYSIDE_BUCKET")


@dataclass(frozen=True)
class FileInfo:
    key: str
    size: int
    modified: datetime


class Storage:
    """One zone of object storage, addressed by relative keys ('a/b/c.csv')."""

    concurrent_reads = True  # files may be read on several threads at once

    def __init__(self, fs: pafs.FileSystem, root: str, uri_prefix: str, s3_client=None, bucket: str = ""):
        self.fs, self.root, self.uri_prefix = fs, root.rstrip("/"), uri_prefix.rstrip("/")
        self._s3, self._bucket = s3_client, bucket

    @property
    def atomic_writes(self) -> bool:
        """Object stores show a file only once it is complete; a folder may show it half-written."""
        return self._s3 is not None

    def path(self, key: str) -> str:
        check_relative_path(key, "key")
        return f"{self.root}/{key}" if key else self.root

    def duckdb_path(self, key: str) -> str:
        """How DuckDB (and httpfs) addresses this file."""
        return f"s3://{self.path(key)}" if self._s3 is not None else self.path(key)

    def uri(self, key: str) -> str:
        return f"{self.uri_prefix}/{check_relative_path(key, 'key')}"

    def list(self, prefix: str = "", start_after: str = "") -> Iterator[FileInfo]:
        """Files under `prefix` in key order, strictly after `start_after` (S3 StartAfter semantics)."""
        check_relative_path(prefix, "prefix")
        if self._s3 is not None:
            yield from self._list_s3(prefix, start_after)
        else:
            yield from self._list_local(prefix, start_after)

    def _list_s3(self, prefix: str, start_after: str) -> Iterator[FileInfo]:
        key_prefix = self.root.split("/", 1)[1] + "/" if "/" in self.root else ""
        kwargs = {"Bucket": self._bucket, "Prefix": key_prefix + prefix}
        if start_after:
            kwargs["StartAfter"] = key_prefix + start_after
        for page in self._s3.get_paginator("list_objects_v2").paginate(**kwargs):
            for obj in page.get("Contents", []):
                if not obj["Key"].endswith("/"):
                    yield FileInfo(obj["Key"][len(key_prefix):], obj["Size"], obj["LastModified"])

    def _list_local(self, prefix: str, start_after: str) -> Iterator[FileInfo]:
        base = Path(self.root)
        start = base / prefix if prefix else base
        # Walk in key order and skip whole subtrees that sort before start_after, so a
        # cursor-driven listing costs what is new, not everything that exists.
        top = start if start.is_dir() else start.parent
        if not top.is_dir():
            return

        def walk(folder: Path) -> Iterator[FileInfo]:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
            for entry in entries:
                key = Path(entry.path).relative_to(base).as_posix()
                if entry.is_dir(follow_symlinks=False):
                    if start_after and key < start_after and not start_after.startswith(key + "/"):
                        continue
                    yield from walk(Path(entry.path))
                elif entry.is_file(follow_symlinks=False) and key.startswith(prefix) and key > start_after:
                    if ".quayside-tmp-" in entry.name:
                        continue  # an atomic write still in progress
                    st = entry.stat()
                    yield FileInfo(key, st.st_size, datetime.fromtimestamp(st.st_mtime, timezone.utc))

        yield from walk(top)

    def info(self, key: str) -> FileInfo | None:
        info = self.fs.get_file_info(self.path(key))
        if info.type != pafs.FileType.File:
            return None
        return FileInfo(key, info.size, info.mtime or datetime.now(timezone.utc))

    def open(self, key: str):
        return self.fs.open_input_file(self.path(key))

    def open_stream(self, key: str) -> BinaryIO:
        # compression=None: pyarrow would otherwise decompress a '.gz' (or '.zst', …) file by its name
        return self.fs.open_input_stream(self.path(key), compression=None)

    def read_bytes(self, key: str) -> bytes:
        with self.open(key) as f:
            return f.read()

    def sha256(self, key: str) -> str:
        digest = hashlib.sha256()
        with self.open_stream(key) as f:
            while chunk := f.read(CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    @property
    def moves_by_rename(self) -> bool:
        """A move renames the file and cannot change its bytes; an object store copies them."""
        return self._s3 is None

    def write(self, key: str, source: BinaryIO | bytes, read_back: bool = False) -> tuple[str, int]:
        """Write atomically (temp file + rename locally; S3 PUT is atomic). Returns (sha256, bytes).

        `read_back` (local storage): read the written bytes back, behind the writer on a second
        thread, and raise CopyMismatch, leaving nothing at `key`, unless they hash the same."""
        if read_back and self._s3 is not None:
            raise ValueError("read_back needs local storage: an S3 object can only be checked once written")
        target = self.path(key)
        parent = target.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.quayside-tmp-{os.urandom(6).hex()}" if self._s3 is None else target
        digest, size = hashlib.sha256(), 0
        try:
            with (self.fs.open_output_stream(tmp, compression=None) as out,
                  _ReadBehind(tmp) if read_back else nullcontext() as behind):
                for chunk in [source] if isinstance(source, bytes) else _chunks(source):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                    if behind:
                        behind.follow(size)
                if behind and behind.hexdigest() != digest.hexdigest():
                    raise CopyMismatch(f"{key}: the bytes read back differ from those written")
            if tmp != target:
                self.fs.move(tmp, target)
        except BaseException:
            if tmp != target:
                self.fs.delete_file(tmp) if self.fs.get_file_info(tmp).type == pafs.FileType.File else None
            raise
        return digest.hexdigest(), size

    def copy_from(self, other: Storage, key: str, dest_key: str, read_back: bool = False) -> tuple[str, int]:
        with other.open_stream(key) as src:
            return self.write(dest_key, src, read_back)

    def delete(self, key: str) -> None:
        self.fs.delete_file(self.path(key))

    def move(self, key: str, dest_key: str) -> None:
        target = self.path(dest_key)
        self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        self.fs.move(self.path(key), target)


class CopyMismatch(OSError):
    """A written file read back differently from the bytes written."""


def _chunks(source: BinaryIO) -> Iterator:
    # pyarrow streams hand out their buffers without a copy into Python bytes.
    read = getattr(source, "read_buffer", source.read)
    while len(chunk := read(CHUNK)):
        yield chunk


class _ReadBehind:
    """Hashes a local file while it is written, reading on a second thread what the writer has
    written so far (unbuffered writes are visible to readers at once)."""

    def __init__(self, path: str):
        self._file = open(path, "rb", buffering=0)
        self._digest = hashlib.sha256()
        self._reader = ThreadPoolExecutor(max_workers=1)
        self._reads: list[Future] = []
        self._followed = 0

    def follow(self, written: int) -> None:
        """The writer has written `written` bytes in all."""
        self._reads.append(self._reader.submit(self._read, written - self._followed))
        self._followed = written

    def _read(self, size: int) -> None:
        while size > 0:
            chunk = self._file.read(min(size, CHUNK))
            if not chunk:
                raise CopyMismatch(f"{self._file.name}: shorter than written")
            self._digest.update(chunk)
            size -= len(chunk)

    def hexdigest(self) -> str:
        for read in self._reads:
            read.result()
        if self._file.read(1):
            raise CopyMismatch(f"{self._file.name}: longer than written")
        return self._digest.hexdigest()

    def __enter__(self) -> _ReadBehind:
        return self

    def __exit__(self, *exc) -> None:
        self._reader.shutdown(cancel_futures=True)
        self._file.close()


def local_storage(root: Path) -> Storage:
    """A folder (a lake zone, or a mounted file share) as Storage."""
    return Storage(pafs.LocalFileSystem(), str(root), root.as_uri())


def s3_storage(bucket: str, prefix: str, region: str, endpoint_url: str = "",
               credentials: dict[str, str] | None = None) -> Storage:
    """`s3://bucket/prefix` as Storage; `credentials` (access_key, secret_key, session_token) for
    another account's bucket, else the standard AWS chain."""
    import boto3

    creds = credentials or {}
    client = boto3.client("s3", region_name=region, endpoint_url=endpoint_url or None,
                          aws_access_key_id=creds.get("access_key"), aws_secret_access_key=creds.get("secret_key"),
                          aws_session_token=creds.get("session_token"))
    fs = pafs.S3FileSystem(
        region=region,
        endpoint_override=endpoint_url.split("://", 1)[1] if endpoint_url else None,
        scheme=endpoint_url.split("://", 1)[0] if endpoint_url else "https",
        allow_bucket_creation=False,
        **{k: v for k, v in creds.items() if v},
    )
    root = f"{bucket}/{check_relative_path(prefix, 'prefix')}".rstrip("/")
    return Storage(fs, root, f"s3://{root}", client, bucket)


class Lake:
    """Storage zones, the Iceberg catalog and DuckDB access for one profile."""

    def __init__(self, settings: LakeSettings | None = None):
        self.settings = settings or LakeSettings.from_env()
        s = self.settings
        if s.profile == "local":
            home = Path(s.home).resolve()
            for zone in ZONES:
                (home / zone).mkdir(parents=True, exist_ok=True)
            # dbt-duckdb's database and its external models' scratch files (dbt_project/profiles.yml).
            (home / "dbt" / "external").mkdir(parents=True, exist_ok=True)
            self.zones = {z: local_storage(home / z) for z in ZONES}
            self.warehouse_uri = (home / "warehouse").as_uri()
        else:
            self.zones = {z: s3_storage(s.bucket, z, s.region, s.endpoint_url) for z in ZONES}
            self.warehouse_uri = f"s3://{s.bucket}/warehouse"
        self._catalog: Catalog | None = None

    # --- zones ---------------------------------------------------------------------
    @property
    def landing(self) -> Storage:
        return self.zones["landing"]

    @property
    def raw(self) -> Storage:
        return self.zones["raw"]

    @property
    def quarantine(self) -> Storage:
        return self.zones["quarantine"]

    # --- catalog -------------------------------------------------------------------
    @property
    def catalog(self) -> Catalog:
        if self._catalog is None:
            self._catalog = self._open_catalog()
        return self._catalog

    def _open_catalog(self) -> Catalog:
        s = self.settings
        if s.profile == "local":
            from pyiceberg.catalog.sql import SqlCatalog

            return SqlCatalog(
                "quayside",
                uri=f"sqlite:///{Path(s.home).resolve() / 'catalog.db'}",
                warehouse=self.warehouse_uri,
            )
        from pyiceberg.catalog.glue import GlueCatalog

        props = {"warehouse": self.warehouse_uri, "glue.region": s.region, "s3.region": s.region}
        if s.glue_catalog_id:
            props["glue.id"] = s.glue_catalog_id
        if s.endpoint_url:
            props |= {"glue.endpoint": s.endpoint_url, "s3.endpoint": s.endpoint_url, "s3.path-style-access": "true"}
        return GlueCatalog("quayside", **props)

    def ensure_namespace(self, namespace: str) -> None:
        check_identifier(namespace, "namespace")
        try:
            self.catalog.create_namespace(namespace, {"location": f"{self.warehouse_uri}/{namespace}"})
        except NamespaceAlreadyExistsError:
            pass
        except Exception:  # SQLite's unique constraint, when a concurrent run created it first
            if (namespace,) not in self.catalog.list_namespaces():
                raise

    def load_table(self, namespace: str, name: str) -> Table | None:
        check_identifier(namespace, "namespace")
        check_identifier(name, "table name")
        try:
            return self.catalog.load_table((namespace, name))
        except NoSuchTableError:
            return None

    def create_table(self, namespace: str, name: str, schema: pa.Schema, partition: tuple[str, str] | None = None,
                     properties: dict[str, str] | None = None) -> Table:
        """Create (or load) a table; `partition` is (column, 'day'|'month')."""
        self.ensure_namespace(namespace)
        check_identifier(name, "table name")
        table = self.catalog.create_table_if_not_exists((namespace, name), schema=schema,
                                                        properties=TABLE_DEFAULTS | (properties or {}))
        if missing := {key: value for key, value in TABLE_DEFAULTS.items() if key not in table.properties}:
            table = table.transaction().set_properties(missing).commit_transaction()  # a table made before them
        if partition and not table.spec().fields:
            from pyiceberg.transforms import DayTransform, MonthTransform

            column, granularity = partition
            transform = DayTransform() if granularity == "day" else MonthTransform()
            try:
                with table.update_spec() as update:
                    update.add_field(column, transform, f"{column}_{granularity}")
            except CommitFailedException:  # a concurrent run created the table too, and partitioned it first
                if not self.catalog.load_table((namespace, name)).spec().fields:
                    raise
            table = self.catalog.load_table((namespace, name))
        return table

    def tables(self) -> list[TableInfo]:
        """Every Iceberg table with its zone, row count and last update."""
        out = []
        for (namespace,) in sorted(self.catalog.list_namespaces()):
            for ident in sorted(self.catalog.list_tables(namespace)):
                table = self.catalog.load_table(ident)
                snap = table.current_snapshot()
                rows = live_rows(snap)
                updated = datetime.fromtimestamp(snap.timestamp_ms / 1000, timezone.utc) if snap else None
                out.append(TableInfo(zone_of(namespace), namespace, ident[-1], rows, updated, table.metadata_location))
        return out

    # --- DuckDB --------------------------------------------------------------------
    def connect(self, views: bool = True) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection that can read the lake; with `views`, every Iceberg table is a
        view `<namespace>.<table>`.

        Views read the table's current metadata file with `iceberg_scan`: zero-copy, and a
        snapshot-consistent read (a later commit needs a new connection or `refresh_views`).
        """
        # Unsigned allowed: the signature check costs ~130 ms a connection, and the only extensions
        # loaded are the pip packages' (`load_extensions`), whose hashes the lockfile pins.
        con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
        self.attach(con, views=views)
        return con

    def attach(self, con: duckdb.DuckDBPyConnection, views: bool = True) -> None:
        """Make an existing DuckDB connection read the lake (extensions, S3 secret, table views)."""
        con.execute("SET TimeZone = 'UTC'")
        load_extensions(con, httpfs=self.settings.profile == "aws")
        if self.settings.profile == "aws":
            import boto3

            s = self.settings
            creds = boto3.Session().get_credentials()
            opts = [f"REGION '{s.region}'"]
            if creds is not None:  # the standard AWS chain, resolved once; never logged
                frozen = creds.get_frozen_credentials()
                opts += [f"KEY_ID '{frozen.access_key}'", f"SECRET '{frozen.secret_key}'"]
                if frozen.token:
                    opts.append(f"SESSION_TOKEN '{frozen.token}'")
            if s.endpoint_url:
                host = s.endpoint_url.split("://", 1)[1]
                opts += [f"ENDPOINT '{host}'", "URL_STYLE 'path'", f"USE_SSL {str(s.endpoint_url.startswith('https')).lower()}"]
            con.execute(f"CREATE OR REPLACE SECRET quayside_s3 (TYPE s3, {', '.join(opts)})")
        if views:
            self.refresh_views(con)

    def scan_sql(self, namespace: str, name: str) -> str | None:
        """`iceberg_scan(...)` of a table's current snapshot, for DuckDB; None if it doesn't exist."""
        table = self.load_table(namespace, name)
        return f"iceberg_scan('{table.metadata_location}')" if table is not None else None

    def refresh_views(self, con: duckdb.DuckDBPyConnection) -> None:
        for info in self.tables():
            con.execute(f'CREATE SCHEMA IF NOT EXISTS "{info.namespace}"')
            con.execute(
                f'CREATE OR REPLACE VIEW "{info.namespace}"."{info.name}" AS '
                f"SELECT * FROM iceberg_scan('{info.metadata_location}')"
            )
        if self.settings.profile == "local":  # the raw zone's files as `raw_<domain>.<name>` (on aws: Glue, for Athena)
            from quayside.raw_tables import create_views

            create_views(self, con)


@dataclass(frozen=True)
class TableInfo:
    zone: str
    namespace: str
    name: str
    rows: int
    updated_at: datetime | None
    metadata_location: str = field(repr=False, default="")

    def as_dict(self) -> dict:
        return {
            "zone": self.zone,
            "namespace": self.namespace,
            "name": self.name,
            "rows": self.rows,
            "updated_at": self.updated_at.isoformat() if self.updated_at else None,
        }


def zone_of(namespace: str) -> str:
    """Namespaces are `<zone>` or `<zone>_<domain>`: staged_courts, quarantine, raw, curated_prisons."""
    return namespace.split("_", 1)[0]


_EXTENSIONS_DIR: str | None = None


def load_extensions(con: duckdb.DuckDBPyConnection, httpfs: bool = False) -> None:
    """Load the pip-shipped DuckDB extensions by path: offline, and avro before iceberg."""
    names = ["avro", "iceberg"] + (["httpfs"] if httpfs else [])
    for name in names:
        package = import_module(f"duckdb_extension_{name}")
        path = Path(package.__file__).parent / "extensions" / f"v{duckdb.__version__}" / f"{name}.duckdb_extension"
        con.load_extension(str(path))

