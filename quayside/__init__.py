"""Quayside core: dataset specs, the lake, ingestion, CDC and checks, in plain Python (no Dagster)."""

from __future__ import annotations


def connect(views: bool = True):
    """A DuckDB connection over the lake of the current profile, every table a `<namespace>.<table>` view.

    For notebooks: `import quayside; con = quayside.connect(); con.sql("select ...").df()`.
    """
    from quayside.lake import Lake

    return Lake().connect(views=views)
