"""Iceberg data files written by Quayside itself and committed in one snapshot, where pyiceberg's
`Table.overwrite` would be slow (it filters the whole input once per partition) or would need the
whole input in memory at once (staging writes each raw file's rows as soon as they are read; a
CDC merge has DuckDB stream a query's rows into the table's files).
"""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path
from urllib.parse import urlparse

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import AlwaysTrue, BooleanExpression
from pyiceberg.io.pyarrow import ArrowScan, bin_pack_arrow_table, parquet_file_to_data_file, write_file
from pyiceberg.manifest import DataFile
from pyiceberg.partitioning import PartitionField, PartitionFieldValue, PartitionKey
from pyiceberg.table import FileScanTask, Table, TableProperties, Transaction, WriteTask
from pyiceberg.transforms import MonthTransform
from pyiceberg.utils.concurrent import ExecutorFactory
from pyiceberg.utils.properties import property_as_int


PARQUET_CODECS = ("zstd", "snappy", "gzip", "lz4", "brotli", "uncompressed")


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
    target = target_file_size or _target_file_size(table)
    write_uuid, counter = uuid.uuid4(), itertools.count()
    tasks = (WriteTask(write_uuid=write_uuid, task_id=next(counter), schema=table.schema(), record_batches=batches,
                       partition_key=key)
             for key, part in slices for batches in bin_pack_arrow_table(part, target))
    return list(write_file(table.io, table.metadata, tasks))


def write_query(con: duckdb.DuckDBPyConnection, table: Table, query: str) -> list[DataFile]:
    """Parquet files of the rows of a DuckDB `query` (columns named as the table's), written by
    DuckDB straight into the table's folder, one or more per partition, not committed. DuckDB
    streams the rows and writes on every core: no Arrow copy of them is ever held, and files
    carry the Iceberg field ids, so any Iceberg reader maps their columns by id."""
    schema = table.schema()
    field_ids = ", ".join(f"'{f.name}': {f.field_id}" for f in schema.fields)
    codec = table.properties.get(TableProperties.PARQUET_COMPRESSION, TableProperties.PARQUET_COMPRESSION_DEFAULT)
    if codec not in PARQUET_CODECS:
        raise ValueError(f"table {table.name()}: unknown Parquet compression {codec!r}")
    options = ["FORMAT parquet", f"FIELD_IDS {{{field_ids}}}", "RETURN_FILES true", "APPEND true", "FILENAME_PATTERN 'cdc-{uuid}'",
               f"COMPRESSION {codec}"]
    if level := table.properties.get(TableProperties.PARQUET_COMPRESSION_LEVEL):
        options.append(f"COMPRESSION_LEVEL {int(level)}")
    partitioning = partition_field(table)
    if partitioning is None:
        options.append(f"FILE_SIZE_BYTES {_target_file_size(table)}")
    else:  # a folder per partition, named like pyiceberg's (the partition comes from the files' statistics)
        field, column = partitioning
        granularity = "%Y-%m" if isinstance(field.transform, MonthTransform) else "%Y-%m-%d"
        query = f'SELECT *, strftime("{column}", \'{granularity}\') AS "{field.name}" FROM ({query})'
        options.append(f'PARTITION_BY ("{field.name}")')
    folder = f"{table.location()}/data"
    local = urlparse(folder).path if urlparse(folder).scheme == "file" else None
    if local:  # DuckDB creates partition folders, not their parent
        Path(local).mkdir(parents=True, exist_ok=True)
    _, files = con.execute(f"COPY ({query}) TO '{local or folder}' ({', '.join(options)})").fetchone()
    # DuckDB answers with local paths; the table's files are named under its location, as pyiceberg does.
    uris = [folder + f.removeprefix(local) if local else f for f in files]

    def describe(uri: str) -> DataFile:  # statistics and partition from the footer, as pyiceberg's add_files
        return parquet_file_to_data_file(table.io, table.metadata, uri)

    return list(ExecutorFactory.get_or_create().map(describe, uris))  # a footer read each: parallel on S3


def _target_file_size(table: Table) -> int:
    return property_as_int(table.properties, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
                           TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT)


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
