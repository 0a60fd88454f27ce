"""dbt-duckdb plugin: the lake's Iceberg tables as DuckDB views, and marts written back as Iceberg.

- `configure_connection`: every Iceberg table becomes a view `<namespace>.<table>` over
  `iceberg_scan` of its current metadata (zero-copy), so dbt sources read the staged layer.
- `store`: an `external` model's Parquet output replaces the Iceberg table
  `<schema>.<model>` in one commit; readers keep the previous snapshot until then, and a model
  that fails never reaches `store`, so a curated table is never half-written.
"""

from __future__ import annotations

import pyarrow.parquet as pq
from dbt.adapters.duckdb.plugins import BasePlugin
from dbt.adapters.duckdb.utils import TargetConfig
from duckdb import DuckDBPyConnection

from quayside.ingest import conform, retry_commit
from quayside.lake import Lake


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict) -> None:
        self.lake = Lake()

    def configure_connection(self, conn: DuckDBPyConnection) -> None:
        self.lake.attach(conn)

    def store(self, target_config: TargetConfig) -> None:
        relation = target_config.relation
        data = pq.read_table(target_config.location.path)
        table = self.lake.load_table(relation.schema, relation.identifier)
        if table is None:
            table = self.lake.create_table(relation.schema, relation.identifier, data.schema)
        elif not table.schema().as_arrow().equals(data.schema, check_metadata=False):
            with table.update_schema(allow_incompatible_changes=True) as update:
                update.union_by_name(data.schema)
            table = self.lake.load_table(relation.schema, relation.identifier)
        rows = conform(data, table.schema().as_arrow())
        retry_commit(lambda: self.lake.load_table(relation.schema, relation.identifier).overwrite(rows))
