"""The Iceberg IO manager for Python assets: a DataFrame in, an Iceberg table in the lake out.

Asset key [zone, domain, name] ↔ table `<zone>_<domain>.<name>`, the same naming as the
staged and curated tables, so a Python asset can take any lake table as an input.
"""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pyarrow as pa

from lake_assets.metadata import arrow_table_schema, preview_markdown
from quayside.publish import publish
from resources import LakeResource


def table_of(key: dg.AssetKey) -> tuple[str, str]:
    if len(key.path) != 3:
        raise dg.Failure(f"asset {key.to_user_string()}: a lake table's key is [zone, domain, name]")
    zone, domain, name = key.path
    return f"{zone}_{domain}", name


class LakeIOManager(dg.ConfigurableIOManager):
    """Writes each output as one Iceberg commit (the previous snapshot stays readable until then)."""

    lake: LakeResource

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        namespace, name = table_of(context.asset_key)
        data = pa.Table.from_pandas(obj, preserve_index=False)
        table = publish(self.lake.lake, namespace, name, data)
        context.add_output_metadata({
            "dagster/row_count": data.num_rows,
            "dagster/column_schema": arrow_table_schema(data.schema),
            "table": f"{namespace}.{name}",
            "snapshot_id": str(table.current_snapshot().snapshot_id),
            "preview": preview_markdown(data),
        })

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        namespace, name = table_of(context.asset_key)
        table = self.lake.lake.load_table(namespace, name)
        if table is None:
            raise dg.Failure(f"input {context.asset_key.to_user_string()}: lake table {namespace}.{name} does "
                             "not exist yet; materialise that asset first")
        return table.scan().to_pandas()
