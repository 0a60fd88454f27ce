"""Sensors of the code location. Every run they (and the catch-up schedules) request carries
`run_tags(spec)`: the dataset and its source connection, the tag the production instance's
QueuedRunCoordinator limits per unique value (deploy/dagster.yaml), so one supplier's backlog
cannot take every run slot."""

from quayside.specs import DatasetSpec

DATASET_TAG = "quayside/dataset"
CONNECTION_TAG = "quayside/connection"


def run_tags(spec: DatasetSpec) -> dict[str, str]:
    return {DATASET_TAG: spec.key, CONNECTION_TAG: spec.source.connection}
