"""Write a result into the lake as an Iceberg table: dbt marts, Python assets, analysts' notebooks.

One commit per call, so readers see the previous snapshot until the new one is complete; a
failure before the commit leaves the table as it was.
"""

from __future__ import annotations

from datetime import date

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression, GreaterThanOrEqual, LessThan
from pyiceberg.table import Table

from quayside.ingest import conform, retry_commit
from quayside.lake import Lake
from quayside.specs import check_identifier


def publish(lake: Lake, namespace: str, name: str, data: pa.Table,
            replace_range: tuple[str, date, date] | None = None, partition_day: str | None = None) -> Table:
    """Replace the table's rows with `data`; with `replace_range=(column, start, end)` only the rows
    with start <= column < end (a partitioned rebuild). Columns new in `data` are added by name;
    `partition_day` partitions a new table by day of that column."""
    check_identifier(namespace, "namespace")
    check_identifier(name, "table name")
    untyped = [f.name for f in data.schema if pa.types.is_null(f.type)]
    if untyped:
        raise ValueError(f"{namespace}.{name}: column(s) {', '.join(untyped)} have no type (every value is "
                         "empty): give them a concrete type before writing")
    table = lake.load_table(namespace, name)
    if table is None:
        table = lake.create_table(namespace, name, data.schema, (partition_day, "day") if partition_day else None)
    elif not table.schema().as_arrow().equals(data.schema, check_metadata=False):
        with table.update_schema(allow_incompatible_changes=True) as update:
            update.union_by_name(data.schema)
    where: BooleanExpression = AlwaysTrue()
    if replace_range:
        column, start, end = replace_range
        check_identifier(column, "replace_range column")
        inside = (pc.field(column) >= start) & (pc.field(column) < end)
        outside = data.filter(~inside | pc.field(column).is_null())
        if outside.num_rows:
            raise ValueError(f"{namespace}.{name}: {outside.num_rows} row(s) have {column} empty or outside "
                             f"[{start}, {end}): refusing to write rows the range does not replace")
        where = And(GreaterThanOrEqual(column, start.isoformat()), LessThan(column, end.isoformat()))

    def commit() -> None:
        current = lake.load_table(namespace, name)
        current.overwrite(conform(data, current.schema().as_arrow()), overwrite_filter=where)

    retry_commit(commit)
    return lake.load_table(namespace, name)
