"""Table maintenance on a real embedded lake: compaction, snapshot expiry, orphan files."""

from __future__ import annotations

import json
import os
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from quayside import maintenance
from quayside.iceberg_files import append_files, partition_slices, replace_files, write_slices
from quayside.maintenance import CompactionConflict, MaintenanceSettings, maintain_table

SCHEMA = pa.schema([("id", pa.int64()), ("day", pa.date32()), ("label", pa.string())])
NOW_SETTINGS = MaintenanceSettings(snapshot_retention=timedelta(0), keep_last_snapshots=2, min_files_to_compact=3)
OLD = time.time() - 10 * 86400


def append(lake, start: int, rows: int = 20) -> None:
    table = lake.load_table("staged_demo", "events")
    data = pa.table({"id": range(start, start + rows), "day": [date(2026, 1, 1 + start % 3)] * rows,
                     "label": [f"row {i}" for i in range(start, start + rows)]}, schema=SCHEMA)
    append_files(table, write_slices(table, partition_slices(table, data)))


@pytest.fixture
def events(local_lake):
    """12 small appends over 3 day-partitions: 4 one-file appends per partition."""
    local_lake.create_table("staged_demo", "events", SCHEMA, ("day", "day"))
    for i in range(12):
        append(local_lake, i * 100)
    return local_lake


def rows(lake) -> pa.Table:
    """Sorted, and in one Arrow schema: pyiceberg reads a string as string or large_string by file."""
    return lake.load_table("staged_demo", "events").scan().to_arrow().cast(SCHEMA).sort_by("id")


def test_compaction_rewrites_small_files_per_partition_and_keeps_every_row(events):
    before = rows(events)
    result = maintain_table(events, "staged_demo", "events", MaintenanceSettings(min_files_to_compact=3))
    assert (result.data_files_before, result.data_files_after) == (12, 3)
    assert (result.files_compacted, result.partitions_compacted) == (12, 3)
    assert rows(events).equals(before)
    table = events.load_table("staged_demo", "events")  # scans read no manifest of removed files
    assert all(m.has_added_files() or m.has_existing_files() for m in table.current_snapshot().manifests(table.io))
    assert events.connect().sql("SELECT count(*), sum(id) FROM staged_demo.events").fetchone() == (
        before.num_rows, sum(before["id"].to_pylist()))
    again = maintain_table(events, "staged_demo", "events", MaintenanceSettings(min_files_to_compact=3))
    snapshots = len(events.load_table("staged_demo", "events").metadata.snapshots)
    assert (again.files_compacted, again.snapshots_expired, again.orphan_files_removed) == (0, 0, 0)
    assert snapshots == result.snapshots_before + 2  # compaction's commit only: the second run committed nothing


def test_partitions_with_too_few_small_files_are_left_alone(events):
    result = maintain_table(events, "staged_demo", "events", MaintenanceSettings(min_files_to_compact=5))
    assert result.files_compacted == 0 and result.data_files_after == 12


def test_snapshot_expiry_keeps_the_newest_and_the_current_snapshot_readable(events):
    before = rows(events)
    result = maintain_table(events, "staged_demo", "events", NOW_SETTINGS)
    table = events.load_table("staged_demo", "events")
    assert result.snapshots_before == 12 and result.snapshots_expired == 12 + 2 - 2  # compaction added two
    assert len(table.metadata.snapshots) == 2
    assert rows(events).equals(before)


def test_dry_run_reports_and_changes_nothing(events):
    location = events.load_table("staged_demo", "events").metadata_location
    result = maintain_table(events, "staged_demo", "events", MaintenanceSettings(
        snapshot_retention=timedelta(0), keep_last_snapshots=2, min_files_to_compact=3, dry_run=True))
    assert (result.files_compacted, result.snapshots_expired, result.data_files_after) == (12, 10, 12)
    assert events.load_table("staged_demo", "events").metadata_location == location


def test_orphans_older_than_the_safety_age_go_fresh_ones_and_outside_files_stay(events, tmp_path):
    table = events.load_table("staged_demo", "events")
    folder = tmp_path / "lake" / "warehouse" / "staged_demo" / "events"
    assert table.metadata.location.endswith(str(folder))
    old_orphan, fresh_orphan = folder / "data" / "crashed-write.parquet", folder / "data" / "in-flight.parquet"
    outside = tmp_path / "lake" / "warehouse" / "staged_demo" / "not-this-table.parquet"
    for path in (old_orphan, fresh_orphan, outside):
        path.write_bytes(b"x" * 10)
    link = folder / "data" / "link.parquet"
    link.symlink_to(outside)
    for path in (old_orphan, outside):
        os.utime(path, (OLD, OLD))
    referenced = [p for p in folder.rglob("*") if p.is_file() and p not in (old_orphan, fresh_orphan, link)]
    for path in referenced:  # metadata, manifests and data files older than the safety age stay too
        os.utime(path, (OLD, OLD))

    dry = maintain_table(events, "staged_demo", "events", MaintenanceSettings(dry_run=True))
    assert (dry.orphan_files_removed, dry.orphan_bytes_removed) == (1, 10) and old_orphan.exists()
    result = maintain_table(events, "staged_demo", "events", MaintenanceSettings())
    assert result.orphan_files_removed == 1
    assert not old_orphan.exists() and fresh_orphan.exists() and outside.exists() and link.is_symlink()
    assert all(p.exists() for p in referenced)
    assert rows(events).num_rows == 12 * 20


def test_compaction_after_expiry_leaves_replaced_files_to_a_later_orphan_run(events):
    """Files of expired snapshots are orphans only once old enough; then a run removes them."""
    maintain_table(events, "staged_demo", "events", MaintenanceSettings(
        snapshot_retention=timedelta(0), keep_last_snapshots=1, min_files_to_compact=3))
    data = list(Path(events.zones["warehouse"].root).rglob("*.parquet"))
    assert len(data) == 12 + 3  # the 12 compacted files are unreferenced but younger than 3 days
    for path in data:
        os.utime(path, (OLD, OLD))
    result = maintain_table(events, "staged_demo", "events", MaintenanceSettings())
    assert result.orphan_files_removed == 12  # the metadata files it left are younger than 3 days
    assert len(list(Path(events.zones["warehouse"].root).rglob("*.parquet"))) == 3
    assert rows(events).num_rows == 12 * 20


def test_a_concurrent_append_during_compaction_is_kept(events, monkeypatch):
    write = maintenance.write_slices
    appended = []

    def write_then_someone_appends(*args, **kwargs):
        files = write(*args, **kwargs)
        if not appended:
            appended.append(True)
            append(events, 5000)
        return files

    monkeypatch.setattr(maintenance, "write_slices", write_then_someone_appends)
    maintain_table(events, "staged_demo", "events", MaintenanceSettings(min_files_to_compact=3))
    assert rows(events).num_rows == 13 * 20 and 5000 in rows(events)["id"].to_pylist()


def test_compaction_refuses_to_commit_when_a_concurrent_writer_replaced_its_files(events, monkeypatch):
    write = maintenance.write_slices

    def write_then_someone_rewrites(table, slices, target):
        files = write(table, slices, target)
        current = events.load_table("staged_demo", "events")
        replace_files(current, list(current.scan().plan_files()), [])  # e.g. a full reload emptied the table
        return files

    monkeypatch.setattr(maintenance, "write_slices", write_then_someone_rewrites)
    with pytest.raises(CompactionConflict, match="staged_demo.events"):
        maintain_table(events, "staged_demo", "events", MaintenanceSettings(min_files_to_compact=3))
    assert rows(events).num_rows == 0


def test_unknown_table_and_bad_identifiers_are_named(local_lake):
    with pytest.raises(ValueError, match="staged_demo.nope: no such table"):
        maintain_table(local_lake, "staged_demo", "nope")
    with pytest.raises(ValueError, match="table name"):
        maintain_table(local_lake, "staged_demo", "../x")


def test_cli_maintains_one_table_and_names_a_missing_one(events, monkeypatch, capsys):
    from quayside.cli import main

    monkeypatch.setenv("QUAYSIDE_HOME", events.settings.home)
    assert main(["maintain", "staged_demo.events", "--min-files", "3", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert (result["table"], result["data_files_before"], result["data_files_after"]) == ("staged_demo.events", 12, 3)
    assert main(["maintain", "staged_demo.missing"]) == 1
    assert "staged_demo.missing: no such table" in capsys.readouterr().err


def test_compacted_files_are_about_the_target_size_on_disk_so_a_second_run_settles(local_lake):
    schema = pa.schema([("id", pa.int64()), ("value", pa.float64())])
    local_lake.create_table("staged_demo", "big", schema)
    rng = np.random.default_rng(1)
    for i in range(8):  # ~0.5 MiB of Parquet each: incompressible random floats
        table = local_lake.load_table("staged_demo", "big")
        data = pa.table({"id": np.arange(i * 40_000, (i + 1) * 40_000), "value": rng.random(40_000)}, schema=schema)
        append_files(table, write_slices(table, partition_slices(table, data)))
    settings = MaintenanceSettings(target_file_size_bytes=1024 * 1024, min_files_to_compact=2)
    first = maintain_table(local_lake, "staged_demo", "big", settings)
    sizes = sorted(t.file.file_size_in_bytes for t in local_lake.load_table("staged_demo", "big").scan().plan_files())
    assert first.files_compacted == 8 and first.data_files_after == 4
    assert all(size > 0.75 * 1024 * 1024 for size in sizes[1:])  # all but the remainder are not small
    assert maintain_table(local_lake, "staged_demo", "big", settings).files_compacted == 0
