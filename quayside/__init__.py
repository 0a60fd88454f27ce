"""Quayside core: dataset specs, the lake, ingestion, CDC and checks, in plain Python (no Dagster)."""

from __future__ import annotations


def connect(views: bool = True):
    """A DuckDB connection over the lake of the current profile, every table a `<namespace>.<table>` view.

    For notebooks: `import quayside; con = quayside.connect(); con.sql("select ...").df()`.
    """
    from quayside.lake import Lake

    return Lake().connect(views=views)


def write(namespace: str, name: str, data) -> None:
    """Write a pandas DataFrame or Arrow table to the lake as Iceberg table `<namespace>.<name>`,
    replacing its rows in one commit (new columns are added). For notebooks and ML workflows:
    `quayside.write("curated_prisons", "my_estimates", df)`.
    """
    import pyarrow as pa

    from quayside.lake import Lake
    from quayside.publish import publish

    table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
    publish(Lake(), namespace, name, table)
