"""Iceberg data files written by Quayside itself and committed in one snapshot, where pyiceberg's
`Table.overwrite` would be slow (it filters the whole input once per partition) or would need the
whole input in memory at once (staging writes each raw file's rows as soon as they are read).
"""

from __future__ import annotations

import itertools
import uuid

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.io.pyarrow import ArrowScan, bin_pack_arrow_table, write_file
from pyiceberg.manifest import DataFile
from pyiceberg.partitioning import PartitionField, PartitionFieldValue, PartitionKey
from pyiceberg.table import FileScanTask, Table, TableProperties, Transaction, WriteTask
from pyiceberg.utils.properties import property_as_int


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


def replace_files(table: Table, old_files: list[FileScanTask], new_files: list[DataFile],
                  forget_removed: bool = False) -> None:
    """Swap whole data files in one snapshot (nothing is rewritten). With `forget_removed`, the
    same commit adds an empty append snapshot: its manifest list leaves out the manifest that
    records the removed files, which every scan of the current snapshot would otherwise read."""
    with table.transaction() as tx:
        with tx.update_snapshot().overwrite() as overwrite:
            for task in old_files:
                overwrite.delete_data_file(task.file)
            for data_file in new_files:
                overwrite.append_data_file(data_file)
        if forget_removed:
            _fast_append(tx, [])  # a fast append keeps only manifests that still list live files


def replace_rows_with_files(table: Table, where: BooleanExpression, new_files: list[DataFile]) -> None:
    """Delete the rows matching `where` and add `new_files`, in one commit."""
    with table.transaction() as tx:
        tx.delete(where)
        _fast_append(tx, new_files)


def _fast_append(tx: Transaction, new_files: list[DataFile]) -> None:
    with tx.update_snapshot().fast_append() as append:
        for data_file in new_files:
            append.append_data_file(data_file)
