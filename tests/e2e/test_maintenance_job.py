"""The nightly maintenance job runs in Dagster on a small lake and reports per staged table."""

from __future__ import annotations

from datetime import date

import dagster as dg
import pyarrow as pa

from lake_assets.definitions import DATASETS, build_definitions
from quayside.iceberg_files import append_files, partition_slices, write_slices
from quayside.lake import Lake, LakeSettings


def test_maintenance_job_compacts_and_observes_the_staged_asset(tmp_path, monkeypatch):
    monkeypatch.setenv("QUAYSIDE_PROFILE", "local")
    monkeypatch.setenv("QUAYSIDE_HOME", str(tmp_path / "lake"))
    lake = Lake(LakeSettings(home=str(tmp_path / "lake")))
    table = lake.create_table("staged_prisons", "population", pa.schema([("id", pa.int64()), ("day", pa.date32())]),
                              ("day", "day"))
    for i in range(4):
        table = lake.load_table("staged_prisons", "population")
        data = pa.table({"id": [i], "day": [date(2026, 1, 1)]}, schema=table.schema().as_arrow())
        append_files(table, write_slices(table, partition_slices(table, data)))

    defs = build_definitions(DATASETS)
    schedule = next(s for s in defs.schedules if s.name == "lake_maintenance_nightly")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    instance = dg.DagsterInstance.ephemeral()
    result = defs.get_job_def("lake_maintenance").execute_in_process(
        instance=instance, run_config={"ops": {"maintain_tables": {"config": {"min_files_to_compact": 3}}}})
    assert result.success
    (observation,) = [e.event_specific_data.asset_observation for e in result.all_events
                      if e.event_type == dg.DagsterEventType.ASSET_OBSERVATION]
    assert observation.asset_key == dg.AssetKey(["staged", "prisons", "population"])
    assert (observation.metadata["data_files_before"].value, observation.metadata["data_files_after"].value) == (4, 1)
    assert lake.load_table("staged_prisons", "population").scan().to_arrow().num_rows == 4
