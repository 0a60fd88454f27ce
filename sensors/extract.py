"""Extract sensors: one per table/API dataset, asking the source whether anything is new past
the last extraction (a cheap query or the first page), and requesting one run per new state."""

import dagster as dg

from quayside.specs import DatasetSpec
from resources.connections import connection_keys, open_source
from sensors import run_tags


def build_extract_sensor(spec: DatasetSpec, targets: list[dg.AssetKey]) -> dg.SensorDefinition:
    what = f"table {spec.source.table.table}" if spec.source.table else f"API path {spec.source.api.path}"

    @dg.sensor(
        name=f"{spec.domain}__{spec.name}__extract",
        description=f"Asks {spec.source.connection} for rows of {what} newer than the last extraction",
        asset_selection=targets,
        required_resource_keys={"lake", *connection_keys(spec)},
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def extract_sensor(context: dg.SensorEvaluationContext):
        news = open_source(context, spec).probe(context.resources.lake.lake, spec)
        if news is None:
            return dg.SkipReason(f"nothing new in {what}")
        # The run key names the new state: the same news never starts two runs.
        return dg.RunRequest(run_key=f"{spec.key}:extract:{news}", tags=run_tags(spec))

    return extract_sensor
