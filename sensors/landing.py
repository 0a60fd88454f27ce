"""Landing sensors: one per dataset, watching landing or its source connection, with a persisted
cursor; one run per dataset and daily batch."""


import hashlib
from datetime import date

import dagster as dg

from quayside.specs import DatasetSpec
from quayside.watch import LandingCursor, poll
from resources.connections import connection_keys, open_source
from sensors import run_tags


def raw_op_name(spec: DatasetSpec) -> str:
    return f"raw__{spec.domain}__{spec.name}"


def build_landing_sensor(spec: DatasetSpec, targets: list[dg.AssetKey],
                         partitions: dg.DailyPartitionsDefinition | None) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"{spec.domain}__{spec.name}__landing",
        description=f"Watches {spec.source.connection}:{spec.source.location} for files matching {spec.source.pattern}",
        asset_selection=targets,
        required_resource_keys={"lake", *connection_keys(spec)},
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )
    def landing_sensor(context: dg.SensorEvaluationContext):
        latest = None
        if partitions is not None:
            last_key = partitions.get_last_partition_key()
            latest = date.fromisoformat(last_key) if last_key else date.min
        batches, cursor, listed = poll(context.resources.lake.lake, spec, LandingCursor.parse(context.cursor), latest_batch=latest,
                                       source=open_source(context, spec))
        requests = []
        for batch in batches:
            digest = hashlib.sha256("\n".join(batch.keys).encode()).hexdigest()[:16]
            requests.append(dg.RunRequest(
                run_key=f"{spec.key}:{batch.batch_date or 'all'}:{digest}",
                partition_key=batch.batch_date.isoformat() if batch.batch_date else None,
                run_config={"ops": {raw_op_name(spec): {"config": {"files": batch.keys}}}},
                tags=run_tags(spec) | {"quayside/files": str(len(batch.keys))},
            ))
        waiting = f", {len(cursor.pending)} still being written" if cursor.pending else ""
        return dg.SensorResult(
            run_requests=requests,
            cursor=cursor.dump(),
            skip_reason=None if requests else dg.SkipReason(f"listed {listed} file(s), nothing new{waiting}"),
        )

    return landing_sensor
