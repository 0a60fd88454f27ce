"""Table maintenance: compaction of small data files, snapshot expiry and orphan-file clean-up
(plain Python, no Dagster).

Every commit to an Iceberg table adds a snapshot, a manifest and usually small data files, and
pyiceberg has no compaction of its own: scans slow down with the number of files and commits
slow down with the number of snapshots (pyiceberg copies the whole metadata several times per
commit). `maintain_table` undoes both, in this order:

1. Compaction: in each partition holding at least `min_files_to_compact` small files (smaller than
   3/4 of `target_file_size_bytes`, Iceberg's own rule), those files are read and rewritten as
   files of about the target size; every partition's rewrite goes into ONE commit that swaps
   whole files, so readers see the old files or the new ones, never both (the commit adds an
   empty append snapshot too, so that scans stop reading the manifest that records the removed
   files: with it, a DuckDB scan of 17 compacted files took 1.7× as long as of the same rows
   written by one append). A partition with position-delete files (a CDC merge deletes rows
   that way) has all its files rewritten without the deleted rows, and its delete files go.
   The commit is optimistic: if another writer committed meanwhile, the files being replaced
   are checked to still be in the table with the same delete files and the commit is retried;
   if one was replaced or got new deletes, nothing is committed and an error names the table
   (the rewritten files become orphans, removed by a later run).
2. Snapshot expiry: snapshots older than `snapshot_retention` go, except the newest
   `keep_last_snapshots` and branch/tag heads. Time travel to an expired snapshot is no longer
   possible; its files stay on disk until step 3 finds them unreferenced.
3. Orphan files (embedded lake only): files under the table's folder that no metadata file,
   snapshot, manifest list or manifest references, and older than `orphan_min_age` (so an
   in-flight write of another process is never taken), are deleted. Symlinks are never followed
   and nothing outside the table's folder is touched.

On the aws profile the same is asked of Athena (`OPTIMIZE ... REWRITE DATA USING BIN_PACK`,
`VACUUM ...`), which runs it on Glue tables; the retention settings become the table's
`vacuum_*` properties first. A run with nothing to do commits nothing.
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import unquote, urlparse

from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
from pyiceberg.table import FileScanTask, Table

from quayside.iceberg_files import read_files, replace_files, write_slices
from quayside.ingest import conform, retry_commit
from quayside.lake import Lake, LakeSettings, zone_of
from quayside.specs import check_identifier

# Zones whose tables Quayside writes commit by commit; curated tables are rebuilt whole by dbt.
MAINTAINED_ZONES = ("raw", "staged", "quarantine")
SMALL_FILE_RATIO = 0.75  # Iceberg's rewrite_data_files: min-file-size-bytes = 0.75 × target
MIB = 1024 * 1024


@dataclass(frozen=True)
class MaintenanceSettings:
    target_file_size_bytes: int = 128 * MIB
    min_files_to_compact: int = 5  # a partition with fewer small files is left as it is
    snapshot_retention: timedelta = timedelta(days=7)
    keep_last_snapshots: int = 5
    orphan_min_age: timedelta = timedelta(days=3)
    dry_run: bool = False  # report what would be done; commit and delete nothing

    @classmethod
    def from_units(cls, target_file_size_mb: float, min_files_to_compact: int, snapshot_retention_days: float,
                   keep_last_snapshots: int, orphan_min_age_days: float, dry_run: bool = False) -> MaintenanceSettings:
        """From the units people configure (CLI flags, Dagster run config)."""
        return cls(int(target_file_size_mb * MIB), min_files_to_compact, timedelta(days=snapshot_retention_days),
                   keep_last_snapshots, timedelta(days=orphan_min_age_days), dry_run)

    def __post_init__(self) -> None:
        if self.target_file_size_bytes < MIB:
            raise ValueError(f"target_file_size_bytes must be at least 1 MiB, not {self.target_file_size_bytes}")
        if self.min_files_to_compact < 2:
            raise ValueError(f"min_files_to_compact must be at least 2, not {self.min_files_to_compact}")
        if self.keep_last_snapshots < 1:
            raise ValueError(f"keep_last_snapshots must be at least 1 (the current snapshot), "
                             f"not {self.keep_last_snapshots}")
        if self.snapshot_retention < timedelta(0) or self.orphan_min_age < timedelta(0):
            raise ValueError("snapshot_retention and orphan_min_age cannot be negative")


DEFAULTS = MaintenanceSettings()


@dataclass
class MaintenanceResult:
    table: str
    engine: str  # pyiceberg (embedded lake) | athena
    data_files_before: int = 0
    data_files_after: int = 0
    data_bytes_before: int = 0
    data_bytes_after: int = 0
    files_compacted: int = 0  # small files rewritten (or that would be, in a dry run)
    partitions_compacted: int = 0
    snapshots_before: int = 0
    snapshots_expired: int = 0
    orphan_files_removed: int = 0  # found, in a dry run
    orphan_bytes_removed: int = 0
    dry_run: bool = False
    seconds: float = 0.0
    statements: list[str] = field(default_factory=list)  # what Athena ran


def parse_table_name(text: str) -> tuple[str, str]:
    """'namespace.name' (as `quayside tables` prints it) → (namespace, name), validated."""
    namespace, _, name = text.partition(".")
    return check_identifier(namespace, f"namespace of table {text!r}"), check_identifier(name, f"name of table {text!r}")


def maintained_tables(lake: Lake) -> list[tuple[str, str]]:
    """(namespace, name) of every table in the raw, staged and quarantine zones."""
    return [(namespace, name) for (namespace,) in sorted(lake.catalog.list_namespaces())
            if zone_of(namespace) in MAINTAINED_ZONES
            for *_, name in sorted(lake.catalog.list_tables(namespace))]


def maintain_table(lake: Lake, namespace: str, name: str,
                   settings: MaintenanceSettings = DEFAULTS) -> MaintenanceResult:
    """Compact, expire snapshots and remove orphan files of one table (see the module doc)."""
    started = time.perf_counter()
    table = lake.load_table(namespace, name)  # validates both identifiers
    if table is None:
        raise ValueError(f"{namespace}.{name}: no such table")
    result = MaintenanceResult(f"{namespace}.{name}", "athena" if lake.settings.profile == "aws" else "pyiceberg",
                               dry_run=settings.dry_run)
    result.data_files_before, result.data_bytes_before = _data_files(table)
    result.snapshots_before = len(table.metadata.snapshots)
    if lake.settings.profile == "aws":
        result.statements = athena_statements(namespace, name, settings)
        if not settings.dry_run:
            run_athena(lake.settings, namespace, result.statements)
        after = lake.load_table(namespace, name)
        result.snapshots_expired = max(0, result.snapshots_before - len(after.metadata.snapshots))
    else:
        now = datetime.now(timezone.utc)
        result.files_compacted, result.partitions_compacted = compact(lake, namespace, name, settings)
        result.snapshots_expired = expire_snapshots(lake, namespace, name, settings, now)
        result.orphan_files_removed, result.orphan_bytes_removed = remove_orphan_files(
            lake, lake.load_table(namespace, name), settings.orphan_min_age, now, settings.dry_run)
        after = lake.load_table(namespace, name)
    result.data_files_after, result.data_bytes_after = _data_files(after)
    result.seconds = time.perf_counter() - started
    return result


def _data_files(table: Table) -> tuple[int, int]:
    files = [task.file for task in table.scan().plan_files()]
    return len(files), sum(f.file_size_in_bytes for f in files)


# --- 1. compaction ---------------------------------------------------------------------
def compaction_plan(table: Table, settings: MaintenanceSettings) -> list[list[FileScanTask]]:
    """Groups of files to rewrite, one group per partition: every file of a partition with delete
    files; else its small files, only if that gives fewer files, so repeated runs settle instead
    of rewriting the same data again."""
    spec_id = table.spec().spec_id
    target = settings.target_file_size_bytes
    by_partition: dict[tuple, list[FileScanTask]] = defaultdict(list)
    old_spec_deletes = False
    for task in table.scan().plan_files():
        # Files of an older partition spec would need their rows re-partitioned: left alone.
        if task.file.spec_id == spec_id:
            by_partition[tuple(task.file.partition)].append(task)
        else:
            old_spec_deletes |= bool(task.delete_files)
    groups = []
    for tasks in by_partition.values():
        if any(task.delete_files for task in tasks):
            # Every partition with deletes goes in the one commit, so all delete files go (see
            # iceberg_files._RowDelta) — unless some can't, for files of an older spec.
            if not old_spec_deletes:
                groups.append(tasks)
            continue
        small = [task for task in tasks if task.file.file_size_in_bytes < target * SMALL_FILE_RATIO]
        if (len(small) >= settings.min_files_to_compact
                and math.ceil(sum(t.file.file_size_in_bytes for t in small) / target) < len(small)):
            groups.append(small)
    return groups


def compact(lake: Lake, namespace: str, name: str, settings: MaintenanceSettings) -> tuple[int, int]:
    """Rewrite the small files of each partition, and the partitions with deletes, as few files,
    in one commit. Returns (files rewritten, partitions)."""
    table = lake.load_table(namespace, name)
    groups = compaction_plan(table, settings)
    if not groups or settings.dry_run:
        return sum(map(len, groups)), len(groups)
    spec, schema = table.spec(), table.schema()
    new_files = []
    for tasks in groups:  # memory holds one partition's small files at a time
        values = tasks[0].file.partition
        key = (PartitionKey([PartitionFieldValue(f, values[i]) for i, f in enumerate(spec.fields)], spec, schema)
               if spec.fields else None)
        rows = conform(read_files(table, tasks), schema.as_arrow())
        # Files are cut by Arrow bytes: scale the target by this data's Parquet compression so
        # the files written are about the target size on disk.
        compression = rows.nbytes / max(1, sum(t.file.file_size_in_bytes for t in tasks))
        new_files += write_slices(table, [(key, rows)], int(settings.target_file_size_bytes * compression))
    old_files = [task for tasks in groups for task in tasks]

    def commit() -> None:
        current = lake.load_table(namespace, name)
        present = {task.file.file_path: _deletes(task) for task in current.scan().plan_files()}
        gone = [task.file.file_path for task in old_files if present.get(task.file.file_path) != _deletes(task)]
        if gone:
            raise CompactionConflict(f"{namespace}.{name}: a concurrent commit replaced or deleted rows of "
                                     f"{len(gone)} of the files being compacted (e.g. {gone[0]}); nothing was "
                                     "committed, run maintenance again")
        replace_files(current, old_files, new_files, forget_removed=True)

    retry_commit(commit)
    return len(old_files), len(groups)


def _deletes(task: FileScanTask) -> set[str]:
    return {d.file_path for d in task.delete_files}


class CompactionConflict(RuntimeError):
    """Another writer replaced files that compaction was rewriting."""


# --- 2. snapshot expiry ------------------------------------------------------------------
def expire_snapshots(lake: Lake, namespace: str, name: str, settings: MaintenanceSettings, now: datetime) -> int:
    """Expire snapshots older than the retention, keeping the newest few and branch/tag heads."""

    def cutoff(table: Table) -> datetime | None:
        """Snapshots before this go: older than the retention and than the newest few."""
        newest_first = sorted(table.metadata.snapshots, key=lambda s: s.timestamp_ms, reverse=True)
        if len(newest_first) <= settings.keep_last_snapshots:
            return None
        oldest_kept = newest_first[settings.keep_last_snapshots - 1].timestamp_ms / 1000
        return min(now - settings.snapshot_retention, datetime.fromtimestamp(oldest_kept, timezone.utc))

    table = lake.load_table(namespace, name)
    before = cutoff(table)
    protected = {ref.snapshot_id for ref in table.metadata.refs.values()}
    count = 0 if before is None else sum(1 for s in table.metadata.snapshots if s.snapshot_id not in protected
                                         and s.timestamp_ms < before.timestamp() * 1000)
    if count and not settings.dry_run:
        def commit() -> None:  # recomputed on retry: a concurrent commit changes which are newest
            table = lake.load_table(namespace, name)
            if (before := cutoff(table)) is not None:
                # One pass over the snapshots (expiring by id copies the whole metadata per snapshot).
                table.maintenance.expire_snapshots().older_than(before).commit()

        retry_commit(commit)
    return count


# --- 3. orphan files ----------------------------------------------------------------------
def remove_orphan_files(lake: Lake, table: Table, min_age: timedelta, now: datetime,
                        dry_run: bool = False) -> tuple[int, int]:
    """Delete files under the table's folder that its metadata does not reference and that are
    older than `min_age`. Returns (files, bytes) removed (found, with `dry_run`)."""
    root = _table_folder(lake, table)
    referenced = _referenced_paths(table)
    cutoff = (now - min_age).timestamp()
    files = bytes_ = 0
    for folder, subfolders, names in os.walk(root):  # os.walk does not follow symlinked folders
        for file_name in names:
            path = Path(folder) / file_name
            if path.is_symlink() or not path.resolve().is_relative_to(root):
                continue  # never act on anything outside the table's folder
            stat = path.stat()
            if str(path) in referenced or stat.st_mtime >= cutoff:
                continue
            if not dry_run:
                path.unlink()
            files, bytes_ = files + 1, bytes_ + stat.st_size
    return files, bytes_


def _table_folder(lake: Lake, table: Table) -> Path:
    """The table's folder, which must be a folder inside the embedded lake's warehouse."""
    name = ".".join(table.name())
    if lake.settings.profile != "local":
        raise ValueError(f"{name}: orphan files are removed by Athena's VACUUM on the aws profile")
    folder = _local_path(table.metadata.location)
    warehouse = _local_path(lake.warehouse_uri)
    if folder is None or warehouse is None or folder == warehouse or not folder.is_relative_to(warehouse):
        raise ValueError(f"{name}: table location {table.metadata.location} is not a folder inside the lake's "
                         f"warehouse {lake.warehouse_uri}; refusing to look for orphan files there")
    return folder


def _local_path(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme not in ("", "file"):
        return None
    return Path(unquote(parsed.path)).resolve()


def _referenced_paths(table: Table) -> set[str]:
    """Every file the table's metadata reaches: metadata files, manifest lists, manifests, data
    and delete files live in any snapshot, statistics. (A manifest entry marked deleted names a
    file its snapshot no longer has: the parent snapshot keeps it referenced while it lives.)"""
    metadata, io = table.metadata, table.io
    uris = {table.metadata_location, *(entry.metadata_file for entry in metadata.metadata_log)}
    uris |= {f.statistics_path for f in metadata.statistics}
    uris |= {f.statistics_path for f in metadata.partition_statistics}
    manifests = {}
    for snapshot in metadata.snapshots:
        uris.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(io):
            manifests[manifest.manifest_path] = manifest
    for path, manifest in manifests.items():
        uris.add(path)
        uris |= {entry.data_file.file_path for entry in manifest.fetch_manifest_entry(io)}
    return {str(path) for uri in uris if (path := _local_path(uri)) is not None}


# --- the aws profile: Athena ---------------------------------------------------------------
def athena_statements(namespace: str, name: str, settings: MaintenanceSettings) -> list[str]:
    """What Athena runs for one Glue table. VACUUM expires snapshots and removes orphan files by
    the table's `vacuum_*` properties, so the retention settings are written there first (Athena
    has no separate orphan age: it uses the snapshot age)."""
    table = f"{check_identifier(namespace, 'namespace')}.{check_identifier(name, 'table name')}"
    max_age = int(settings.snapshot_retention.total_seconds())
    return [
        f"ALTER TABLE {table} SET TBLPROPERTIES ('vacuum_max_snapshot_age_seconds'='{max_age}', "
        f"'vacuum_min_snapshots_to_keep'='{int(settings.keep_last_snapshots)}')",
        f"OPTIMIZE {table} REWRITE DATA USING BIN_PACK",
        f"VACUUM {table}",
    ]


ATHENA_DONE = ("SUCCEEDED", "FAILED", "CANCELLED")


def run_athena(settings: LakeSettings, database: str, statements: list[str], client=None,
               poll_seconds: float = 2.0) -> None:
    """Run statements one after another in the lake's Athena workgroup; raise on the first failure."""
    if client is None:
        import boto3

        client = boto3.client("athena", region_name=settings.region, endpoint_url=settings.endpoint_url or None)
    for sql in statements:
        query_id = client.start_query_execution(
            QueryString=sql, QueryExecutionContext={"Database": database}, WorkGroup=settings.athena_workgroup,
            ResultConfiguration={"OutputLocation": f"s3://{settings.bucket}/athena-results/"},
        )["QueryExecutionId"]
        while (status := client.get_query_execution(QueryExecutionId=query_id)["QueryExecution"]["Status"])[
                "State"] not in ATHENA_DONE:
            time.sleep(poll_seconds)
        if status["State"] != "SUCCEEDED":
            raise RuntimeError(f"Athena {status['State'].lower()} `{sql}`: {status.get('StateChangeReason', '')}")
