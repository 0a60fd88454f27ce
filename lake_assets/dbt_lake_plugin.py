"""dbt-duckdb plugin: the lake's Iceberg tables as DuckDB views, and marts written back as Iceberg.

- `configure_connection`: every Iceberg table becomes a view `<namespace>.<table>` over
  `iceberg_scan` of its current metadata (zero-copy), so dbt sources read the staged layer.
- `store`: an `external` model's Parquet output replaces the Iceberg table `<schema>.<model>`
  in one commit (`quayside.publish`); a model that fails never reaches `store`, so a curated
  table is never half-written. A model configured with `replace_range: [column, start, end]`
  (a daily incremental model) replaces only the rows in that range.
"""

from __future__ import annotations

from datetime import date

import pyarrow.compute as pc
import pyarrow.parquet as pq
from dbt.adapters.duckdb.plugins import BasePlugin
from dbt.adapters.duckdb.utils import TargetConfig
from duckdb import DuckDBPyConnection

from quayside.lake import Lake
from quayside.publish import publish


class Plugin(BasePlugin):
    def initialize(self, plugin_config: dict) -> None:
        self.lake = Lake()
        self.connection: DuckDBPyConnection | None = None

    def configure_connection(self, conn: DuckDBPyConnection) -> None:
        # Dagster reads column metadata through a read-only connection: the views are already there.
        (read_only,) = conn.execute(
            "SELECT readonly FROM duckdb_databases() WHERE database_name = current_database()").fetchone()
        self.lake.attach(conn, views=not read_only)
        self.connection = conn

    def store(self, target_config: TargetConfig) -> None:
        relation = target_config.relation
        data = pq.read_table(target_config.location.path)
        if data.num_rows == 1 and all(pc.all(pc.is_null(c)).as_py() for c in data.columns):
            data = data.slice(0, 0)  # dbt-duckdb writes one all-null row for an empty result
        replace_range = target_config.config.get("replace_range")
        if replace_range:
            column, start, end = replace_range
            replace_range = (column, date.fromisoformat(str(start)), date.fromisoformat(str(end)))
        table = publish(self.lake, relation.schema, relation.identifier, data, replace_range=replace_range,
                        partition_day=target_config.config.get("partition_day"))
        if self.connection is not None:
            # dbt's view reads only this run's Parquet file: point it at the whole Iceberg table,
            # so tests and downstream models see every partition, as analysts do.
            self.connection.cursor().execute(
                f'CREATE OR REPLACE VIEW "{relation.schema}"."{relation.identifier}" AS '
                f"SELECT * FROM iceberg_scan('{table.metadata_location}')")
