"""Iceberg data files written by Quayside itself and committed in one snapshot, where pyiceberg's
`Table.overwrite` would be slow (it filters the whole input once per partition) or would need the
whole input in memory at once (staging writes each raw file's rows as soon as they are read), and
position-delete files, which pyiceberg reads but cannot write (a CDC merge deletes the rows its
changes replace without rewriting the files that hold them: merge-on-read).
"""

from __future__ import annotations

import itertools
import posixpath
import uuid
from collections import defaultdict

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.conversions import to_bytes
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.io.pyarrow import ArrowScan, bin_pack_arrow_table, write_file
from pyiceberg.manifest import (DataFile, DataFileContent, FileFormat, ManifestContent, ManifestEntry,
                                ManifestEntryStatus, ManifestFile, ManifestWriterV2)
from pyiceberg.partitioning import PartitionField, PartitionFieldValue, PartitionKey
from pyiceberg.table import FileScanTask, Table, TableProperties, Transaction, WriteTask
from pyiceberg.table.snapshots import Operation, Snapshot, Summary
from pyiceberg.table.update.snapshot import _FastAppendFiles
from pyiceberg.typedef import EMPTY_DICT
from pyiceberg.types import StringType
from pyiceberg.utils.properties import property_as_int

# The reserved field ids of a position-delete file's columns (Iceberg spec).
DELETE_FILE_PATH_ID, DELETE_POS_ID = 2147483546, 2147483545
POSITION_DELETE_SCHEMA = pa.schema([
    pa.field("file_path", pa.string(), nullable=False, metadata={"PARQUET:field_id": str(DELETE_FILE_PATH_ID)}),
    pa.field("pos", pa.int64(), nullable=False, metadata={"PARQUET:field_id": str(DELETE_POS_ID)})])


def partition_field(table: Table) -> tuple[PartitionField, str] | None:
    """The table's partition field and its source column (Quayside partitions on one column)."""
    spec = table.spec()
    if spec.is_unpartitioned():
        return None
    field = spec.fields[0]
    return field, table.schema().find_column_name(field.source_id)


def partition_values(table: Table, field: PartitionField, column: pa.ChunkedArray) -> pa.Array:
    """Iceberg partition values (e.g. months since 1970) of a column, by the table's own transform."""
    source_type = table.schema().find_field(field.source_id).field_type
    return field.transform.pyarrow_transform(source_type)(column.combine_chunks())


def partition_slices(table: Table, data: pa.Table) -> list[tuple[PartitionKey | None, pa.Table]]:
    """Rows grouped by partition, as zero-copy slices. Rows usually arrive in runs of one partition
    (a file of one day, re-chained CDC rows), so run-length encoding finds them without sorting."""
    partitioning = partition_field(table)
    if partitioning is None:
        return [(None, data)] if data.num_rows else []
    field, column = partitioning
    runs = pc.run_end_encode(partition_values(table, field, data[column]))
    groups: dict[int | None, list[pa.Table]] = {}
    start = 0
    for end, value in zip(runs.run_ends.to_pylist(), runs.values.to_pylist()):
        groups.setdefault(value, []).append(data.slice(start, end - start))
        start = end
    return [(PartitionKey([PartitionFieldValue(field, value)], table.spec(), table.schema()), pa.concat_tables(parts))
            for value, parts in groups.items()]


def write_slices(table: Table, slices: list[tuple[PartitionKey | None, pa.Table]],
                 target_file_size: int | None = None) -> list[DataFile]:
    """Parquet files for the slices (rows already in the table's schema), written in parallel by
    pyiceberg as `Table.append` would, but not committed. Files are cut at `target_file_size`
    bytes of Arrow data (default: the table's `write.target-file-size-bytes`)."""
    target = target_file_size or property_as_int(table.properties, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
                                                 TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT)
    write_uuid, counter = uuid.uuid4(), itertools.count()
    tasks = (WriteTask(write_uuid=write_uuid, task_id=next(counter), schema=table.schema(), record_batches=batches,
                       partition_key=key)
             for key, part in slices for batches in bin_pack_arrow_table(part, target))
    return list(write_file(table.io, table.metadata, tasks))


def read_files(table: Table, files: list[FileScanTask]) -> pa.Table:
    """All rows of these data files, in file order, in the table's current schema."""
    return ArrowScan(table.metadata, table.io, table.schema(), row_filter=AlwaysTrue()).to_table(files)


def append_files(table: Table, new_files: list[DataFile]) -> None:
    """Add data files in one snapshot; existing manifests are kept as they are (a fast append)."""
    with table.transaction() as tx:
        _fast_append(tx, new_files)


def live_rows(snapshot: Snapshot | None) -> int:
    """Rows a scan of the snapshot returns: the rows of its data files minus the positions its
    delete files delete (Quayside never deletes a position twice)."""
    summary = snapshot.summary if snapshot else None
    return int(summary.get("total-records", 0)) - int(summary.get("total-position-deletes", 0)) if summary else 0


def replace_files(table: Table, old_files: list[FileScanTask], new_files: list[DataFile],
                  forget_removed: bool = False) -> None:
    """Swap whole data files in one snapshot (nothing is rewritten); the old files' delete files
    go with them, so `new_files` must hold the old files' rows with the deletes applied, and the
    old files must include every file with deletes (see _RowDelta). With
    `forget_removed`, the same commit adds an empty append snapshot: its manifest list leaves out
    the manifest that records the removed files, which every scan would otherwise read."""
    with table.transaction() as tx:
        with tx.update_snapshot().overwrite() as overwrite:
            for old in {task.file for task in old_files} | {d for task in old_files for d in task.delete_files}:
                overwrite.delete_data_file(old)
            for data_file in new_files:
                overwrite.append_data_file(data_file)
        if forget_removed:
            _fast_append(tx, [])  # a fast append keeps only manifests that still list live files


def write_position_deletes(table: Table, positions: pa.Table, data_files: list[DataFile]) -> list[DataFile]:
    """Position-delete files deleting `positions` (file_path, pos; sorted) of `data_files`: one
    per partition, next to its data, not committed."""
    by_path = {f.file_path: f for f in data_files}
    groups: dict[tuple, list[pa.Table]] = defaultdict(list)
    runs = pc.run_end_encode(positions["file_path"].combine_chunks())
    start = 0
    for end, path in zip(runs.run_ends.to_pylist(), runs.values.to_pylist()):
        data_file = by_path[path]
        groups[(data_file.spec_id, tuple(data_file.partition))].append(positions.slice(start, end - start))
        start = end
    delete_files = []
    for parts in groups.values():
        rows = pa.concat_tables(parts).cast(POSITION_DELETE_SCHEMA)
        first = by_path[rows["file_path"][0].as_py()]
        path = f"{posixpath.dirname(first.file_path)}/deletes-{uuid.uuid4()}.parquet"
        output = table.io.new_output(path)
        with output.create() as stream:
            pq.write_table(rows, stream, compression="zstd")
        low, high = pc.min_max(rows["file_path"]).values()  # bounds let readers skip files it doesn't name
        delete_file = DataFile.from_args(
            content=DataFileContent.POSITION_DELETES, file_path=path, file_format=FileFormat.PARQUET,
            partition=first.partition, record_count=rows.num_rows, file_size_in_bytes=len(output.to_input_file()),
            lower_bounds={DELETE_FILE_PATH_ID: to_bytes(StringType(), low.as_py())},
            upper_bounds={DELETE_FILE_PATH_ID: to_bytes(StringType(), high.as_py())},
            sort_order_id=None, equality_ids=None, key_metadata=None)
        delete_file.spec_id = first.spec_id
        delete_files.append(delete_file)
    return delete_files


def add_rows_and_deletes(table: Table, new_files: list[DataFile], delete_files: list[DataFile]) -> None:
    """Add data files and position-delete files in one snapshot (Iceberg's row delta)."""
    if delete_files and table.format_version < 2:
        raise ValueError(f"table {'.'.join(table.name())} is Iceberg format version 1, which has no delete files; "
                         "upgrade it to version 2 (ALTER TABLE … SET TBLPROPERTIES ('format-version'='2'))")
    with table.transaction() as tx:
        with _RowDelta(tx, delete_files) as delta:
            for data_file in new_files:
                delta.append_data_file(data_file)


class _DeleteManifestWriter(ManifestWriterV2):
    def content(self) -> ManifestContent:
        return ManifestContent.DELETES

    @property
    def _meta(self) -> dict[str, str]:
        return {**super()._meta, "content": "deletes"}


class _RowDelta(_FastAppendFiles):
    """A fast append that also adds position-delete files, in one manifest per partition spec.
    Compaction removes every delete file of a table in one commit, so a delete manifest always
    goes whole (pyiceberg's overwrite would rewrite a partly removed one as a data manifest)."""

    def __init__(self, tx: Transaction, delete_files: list[DataFile]):
        super().__init__(Operation.OVERWRITE, tx, tx._table.io)
        self._delete_files = delete_files

    def _manifests(self) -> list[ManifestFile]:
        metadata = self._transaction.table_metadata
        by_spec: dict[int, list[DataFile]] = defaultdict(list)
        for delete_file in self._delete_files:
            by_spec[delete_file.spec_id].append(delete_file)
        manifests = []
        for spec_id, files in by_spec.items():
            with _DeleteManifestWriter(metadata.specs()[spec_id], metadata.schema(), self.new_manifest_output(),
                                       self._snapshot_id, self._compression) as writer:
                for delete_file in files:
                    writer.add(ManifestEntry.from_args(status=ManifestEntryStatus.ADDED, snapshot_id=self._snapshot_id,
                                                       sequence_number=None, file_sequence_number=None,
                                                       data_file=delete_file))
            manifests.append(writer.to_manifest_file())
        return super()._manifests() + manifests

    def _summary(self, snapshot_properties: dict[str, str] = EMPTY_DICT) -> Summary:
        # The summary collector counts what it is given by content: delete files as deletes.
        data_files = self._added_data_files
        self._added_data_files = data_files + self._delete_files
        try:
            return super()._summary(snapshot_properties)
        finally:
            self._added_data_files = data_files


def replace_rows_with_files(table: Table, where: BooleanExpression, new_files: list[DataFile]) -> None:
    """Delete the rows matching `where` and add `new_files`, in one commit."""
    with table.transaction() as tx:
        tx.delete(where)
        _fast_append(tx, new_files)


def _fast_append(tx: Transaction, new_files: list[DataFile]) -> None:
    with tx.update_snapshot().fast_append() as append:
        for data_file in new_files:
            append.append_data_file(data_file)
