"""quayside.cdc against a real local lake (folder + SQLite catalog) in tmp_path."""

from __future__ import annotations

from datetime import date, datetime, timezone

import pyarrow as pa
import pytest

from quayside.cdc import apply_changes
from quayside.lake import Lake, LakeSettings
from quayside.specs import DatasetSpec

INGESTED = datetime(2024, 3, 1, tzinfo=timezone.utc)


# --- builders -------------------------------------------------------------------------
def make_spec(partitioned: bool = True, keys: tuple[str, ...] = ("id",)) -> DatasetSpec:
    return DatasetSpec.model_validate({
        "name": "cases", "domain": "courts", "description": "court cases", "owner": "team:data",
        "source": {"location": "courts/cases/", "pattern": r".*\.parquet", "format": "parquet"},
        "columns": [{"name": "id", "type": "int"}, {"name": "region", "type": "string"},
                    {"name": "opened", "type": "date"}, {"name": "status", "type": "string"},
                    {"name": "amount", "type": "decimal(10,2)"}],
        "primary_key": list(keys),
        "partitioning": {"column": "opened", "granularity": "month", "start": "2024-01-01"} if partitioned else None,
        "load_mode": "cdc",
    })


def change(id: int, op: str, ts: str, status: str = "open", opened: date | None = date(2024, 1, 5),
           seq: str | None = None, region: str = "north", file: str = "cdc/20240301-001.parquet") -> dict:
    return {"id": id, "region": region, "opened": opened, "status": status, "amount": None,
            "_source_file": file, "_batch_date": date(2024, 3, 1), "_ingested_at": INGESTED,
            "_op": op, "_cdc_ts": datetime.fromisoformat(ts), "_cdc_seq": seq}


SCHEMA = pa.schema([
    ("id", pa.int64()), ("region", pa.string()), ("opened", pa.date32()), ("status", pa.string()),
    ("amount", pa.decimal128(10, 2)), ("_source_file", pa.string()), ("_batch_date", pa.date32()),
    ("_ingested_at", pa.timestamp("us", tz="UTC")), ("_op", pa.string()), ("_cdc_ts", pa.timestamp("us")),
    ("_cdc_seq", pa.string())])


def changes(*rows: dict) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=SCHEMA)


def new_lake(tmp_path, name: str = "lake") -> Lake:
    return Lake(LakeSettings(home=str(tmp_path / name)))


def rows(lake: Lake, table: str, spec: DatasetSpec | None = None) -> list[dict]:
    spec = spec or make_spec()
    data = lake.load_table(spec.staged_namespace, table).scan().to_arrow().to_pylist()
    # The versions' order (VERSION_ORDER): files may hold rows in any order.
    return sorted(data, key=lambda r: (r["id"], r["region"], r.get("valid_from") or datetime.min,
                                       r.get("_cdc_seq") or "", "IUD".find(r.get("op") or "I")))


def history(lake: Lake, spec: DatasetSpec | None = None) -> list[tuple]:
    return [(r["id"], r["op"], r["status"], r["valid_from"], r["valid_to"], r["is_current"])
            for r in rows(lake, "cases_history", spec)]


def current(lake: Lake, spec: DatasetSpec | None = None) -> list[tuple]:
    return [(r["id"], r["status"]) for r in rows(lake, "cases", spec)]


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


# --- semantics ------------------------------------------------------------------------
def test_first_batch_creates_both_tables_partitioned_like_the_spec(tmp_path):
    lake, spec = new_lake(tmp_path), make_spec()
    result = apply_changes(lake, spec, changes(change(1, "I", "2024-01-05 10:00"), change(2, "I", "2024-01-05 11:00")),
                           full_load=False)

    assert (result.changes_in, result.changes_applied, result.rows_current) == (2, 2, 2)
    assert result.partitions_touched == 1 and result.closed_by_full_load == 0
    for name in ("cases", "cases_history"):
        table = lake.load_table("staged_courts", name)
        assert [(f.name, str(f.transform)) for f in table.spec().fields] == [("opened_month", "month")]
    assert lake.load_table("staged_courts", "cases").schema().column_names == [
        "id", "region", "opened", "status", "amount", "_source_file", "_batch_date", "_ingested_at"]
    assert lake.load_table("staged_courts", "cases_history").schema().column_names[-5:] == [
        "op", "valid_from", "valid_to", "is_current", "_cdc_seq"]
    assert history(lake) == [(1, "I", "open", ts("2024-01-05 10:00"), None, True),
                             (2, "I", "open", ts("2024-01-05 11:00"), None, True)]


def test_versions_are_ordered_by_timestamp_and_sequence_not_by_arrival(tmp_path):
    a = changes(change(1, "I", "2024-01-05 10:00"), change(2, "I", "2024-01-05 10:00", seq="001"),
                change(2, "U", "2024-01-05 10:00", "closed", seq="002"))
    b = changes(change(1, "U", "2024-01-06 09:00", "closed", file="cdc/b.parquet"),
                change(2, "D", "2024-01-07 09:00", file="cdc/b.parquet"),
                change(3, "I", "2024-02-01 09:00", opened=date(2024, 2, 1), file="cdc/b.parquet"))
    in_order, reversed_order = new_lake(tmp_path, "in_order"), new_lake(tmp_path, "reversed")
    spec = make_spec()
    for batch in (a, b):
        apply_changes(in_order, spec, batch, full_load=False)
    for batch in (b, a):
        apply_changes(reversed_order, spec, batch, full_load=False)

    assert rows(in_order, "cases_history") == rows(reversed_order, "cases_history")
    assert rows(in_order, "cases") == rows(reversed_order, "cases")
    assert history(reversed_order) == [
        (1, "I", "open", ts("2024-01-05 10:00"), ts("2024-01-06 09:00"), False),
        (1, "U", "closed", ts("2024-01-06 09:00"), None, True),
        (2, "I", "open", ts("2024-01-05 10:00"), ts("2024-01-05 10:00"), False),  # seq 001 before 002
        (2, "U", "closed", ts("2024-01-05 10:00"), ts("2024-01-07 09:00"), False),
        (2, "D", "open", ts("2024-01-07 09:00"), ts("2024-01-07 09:00"), False),
        (3, "I", "open", ts("2024-02-01 09:00"), None, True)]
    assert current(reversed_order) == [(1, "closed"), (3, "open")]


def test_reapplying_changes_is_a_no_op(tmp_path):
    lake, spec = new_lake(tmp_path), make_spec()
    batch = changes(change(1, "I", "2024-01-05 10:00"), change(1, "U", "2024-01-06 10:00", "closed"),
                    change(2, "I", "2024-01-05 10:00", seq=None))
    apply_changes(lake, spec, batch, full_load=False)
    snapshots = {n: lake.load_table("staged_courts", n).current_snapshot().snapshot_id
                 for n in ("cases", "cases_history")}
    before = rows(lake, "cases_history"), rows(lake, "cases")

    again = apply_changes(lake, spec, batch, full_load=False)

    assert (again.changes_in, again.changes_applied, again.rows_current, again.partitions_touched) == (3, 0, 2, 0)
    assert {n: lake.load_table("staged_courts", n).current_snapshot().snapshot_id for n in snapshots} == snapshots
    assert (rows(lake, "cases_history"), rows(lake, "cases")) == before


def test_a_batch_mixing_old_and_new_rows_applies_only_the_new(tmp_path):
    lake, spec = new_lake(tmp_path), make_spec()
    first = change(1, "I", "2024-01-05 10:00")
    apply_changes(lake, spec, changes(first), full_load=False)
    result = apply_changes(lake, spec, changes(first, first, change(1, "U", "2024-01-06 10:00", "closed")),
                           full_load=False)
    assert result.changes_applied == 1
    assert [h[:3] for h in history(lake)] == [(1, "I", "open"), (1, "U", "closed")]


def test_several_changes_of_a_key_in_one_batch_all_become_versions(tmp_path):
    lake, spec = new_lake(tmp_path), make_spec()
    result = apply_changes(lake, spec, changes(
        change(1, "D", "2024-01-05 12:00"), change(1, "I", "2024-01-05 10:00"),
        change(1, "U", "2024-01-05 11:00", "closed"),
        change(2, "U", "2024-01-05 11:00", "closed"), change(2, "I", "2024-01-05 10:00")), full_load=False)

    assert (result.changes_applied, result.rows_current) == (5, 1)
    assert history(lake) == [
        (1, "I", "open", ts("2024-01-05 10:00"), ts("2024-01-05 11:00"), False),
        (1, "U", "closed", ts("2024-01-05 11:00"), ts("2024-01-05 12:00"), False),
        (1, "D", "open", ts("2024-01-05 12:00"), ts("2024-01-05 12:00"), False),
        (2, "I", "open", ts("2024-01-05 10:00"), ts("2024-01-05 11:00"), False),
        (2, "U", "closed", ts("2024-01-05 11:00"), None, True)]
    assert current(lake) == [(2, "closed")]


def test_full_load_closes_missing_keys_and_skips_unchanged_ones(tmp_path):
    lake, spec = new_lake(tmp_path), make_spec()
    apply_changes(lake, spec, changes(change(1, "I", "2024-01-05 10:00"), change(2, "I", "2024-01-05 10:00"),
                                      change(3, "I", "2024-01-05 10:00"),
                                      change(4, "I", "2024-03-09 10:00")),  # newer than the full load
                  full_load=False)
    load = changes(change(1, "I", "2024-03-01 00:00", file="LOAD00000001.parquet"),  # unchanged
                   change(2, "I", "2024-03-01 00:00", "closed", file="LOAD00000001.parquet"),  # changed
                   change(5, "I", "2024-03-01 00:00", file="LOAD00000001.parquet"))  # new; 3 missing

    result = apply_changes(lake, spec, load, full_load=True)

    assert (result.changes_in, result.changes_applied, result.closed_by_full_load, result.rows_current) == (3, 2, 1, 4)
    assert history(lake) == [
        (1, "I", "open", ts("2024-01-05 10:00"), None, True),
        (2, "I", "open", ts("2024-01-05 10:00"), ts("2024-03-01 00:00"), False),
        (2, "I", "closed", ts("2024-03-01 00:00"), None, True),
        (3, "I", "open", ts("2024-01-05 10:00"), ts("2024-03-01 00:00"), False),
        (3, "D", "open", ts("2024-03-01 00:00"), ts("2024-03-01 00:00"), False),
        (4, "I", "open", ts("2024-03-09 10:00"), None, True),
        (5, "I", "open", ts("2024-03-01 00:00"), None, True)]
    closing = [r for r in rows(lake, "cases_history") if r["op"] == "D"][0]
    assert closing["_source_file"] == "LOAD00000001.parquet"
    assert current(lake) == [(1, "open"), (2, "closed"), (4, "open"), (5, "open")]

    again = apply_changes(lake, spec, load, full_load=True)
    assert (again.changes_applied, again.closed_by_full_load, again.rows_current) == (0, 0, 4)


def test_only_touched_partitions_change_and_no_file_is_rewritten(tmp_path):
    lake, spec = new_lake(tmp_path), make_spec()
    apply_changes(lake, spec, changes(change(1, "I", "2024-01-05 10:00"),
                                      change(2, "I", "2024-02-05 10:00", opened=date(2024, 2, 5)),
                                      change(3, "I", "2024-04-05 10:00", opened=date(2024, 4, 5))), full_load=False)

    def files(name: str) -> dict[int, set[tuple[str, frozenset[str]]]]:
        by_partition = {}
        for t in lake.load_table("staged_courts", name).scan().plan_files():
            by_partition.setdefault(t.file.partition[0], set()).add(
                (t.file.file_path, frozenset(d.file_path for d in t.delete_files)))
        return by_partition

    before = {n: files(n) for n in ("cases", "cases_history")}
    result = apply_changes(lake, spec, changes(change(2, "U", "2024-02-06 10:00", "closed", opened=date(2024, 2, 5))),
                           full_load=False)

    assert result.partitions_touched == 1
    february = (2024 - 1970) * 12 + 1  # Iceberg month partitions count months since 1970-01
    for name, old in before.items():
        new = files(name)
        assert new.keys() == old.keys()
        assert [p for p in old if new[p] != old[p]] == [february]
        # February's old file stays, with a delete file for the replaced row; a new file holds its new rows.
        [(old_file, no_deletes)] = old[february]
        assert not no_deletes
        assert {path for path, deletes in new[february] if deletes} == {old_file}
        assert len(new[february]) == 2
    assert current(lake) == [(1, "open"), (2, "closed"), (3, "open")]
    assert lake.tables()[0].rows == 3  # rows a scan returns, net of deleted positions


def test_unpartitioned_table_with_composite_key(tmp_path):
    lake, spec = new_lake(tmp_path), make_spec(partitioned=False, keys=("id", "region"))
    apply_changes(lake, spec, changes(change(1, "I", "2024-01-05 10:00", region="north"),
                                      change(1, "I", "2024-01-05 10:00", region="south")), full_load=False)
    result = apply_changes(lake, spec, changes(change(1, "D", "2024-01-06 10:00", region="south")), full_load=False)

    assert (result.changes_applied, result.rows_current, result.partitions_touched) == (1, 1, 0)
    assert not lake.load_table("staged_courts", "cases").spec().fields
    assert [(r["id"], r["region"]) for r in rows(lake, "cases", spec)] == [(1, "north")]


def test_null_partition_values_and_key_only_deletes_keep_their_partition(tmp_path):
    lake, spec = new_lake(tmp_path), make_spec()
    apply_changes(lake, spec, changes(change(1, "I", "2024-01-05 10:00"),
                                      change(2, "I", "2024-02-05 10:00", opened=date(2024, 2, 5))), full_load=False)
    result = apply_changes(lake, spec, changes(change(3, "I", "2024-02-06 10:00", opened=None),
                                               change(2, "D", "2024-02-07 10:00", opened=None)), full_load=False)

    # The whole table is read (a key's partition is unknown); February (key 2) and the null partition change.
    assert result.partitions_touched == 2
    assert current(lake) == [(1, "open"), (3, "open")]
    deleted = [r for r in rows(lake, "cases_history") if r["op"] == "D"]
    assert [(r["id"], r["opened"]) for r in deleted] == [(2, date(2024, 2, 5))]
    # A later change to key 2's partition sees the delete: the chain stays right.
    apply_changes(lake, spec, changes(change(2, "I", "2024-02-08 10:00", opened=date(2024, 2, 5))), full_load=False)
    assert [h for h in history(lake) if h[0] == 2] == [
        (2, "I", "open", ts("2024-02-05 10:00"), ts("2024-02-07 10:00"), False),
        (2, "D", "open", ts("2024-02-07 10:00"), ts("2024-02-07 10:00"), False),
        (2, "I", "open", ts("2024-02-08 10:00"), None, True)]


def test_changes_need_a_timestamp_and_known_ops(tmp_path):
    lake, spec = new_lake(tmp_path), make_spec()
    no_ts = changes(change(1, "I", "2024-01-05 10:00")).set_column(9, "_cdc_ts", pa.nulls(1, pa.timestamp("us")))
    with pytest.raises(ValueError, match="_cdc_ts"):
        apply_changes(lake, spec, no_ts, full_load=False)
    with pytest.raises(ValueError, match="unknown CDC ops"):
        apply_changes(lake, spec, changes(change(1, "X", "2024-01-05 10:00")), full_load=False)


def test_day_partitions_on_a_timestamptz_column(tmp_path):
    spec = DatasetSpec.model_validate({
        "name": "events", "domain": "courts", "description": "events", "owner": "team:data",
        "source": {"location": "courts/events/", "pattern": r".*\.parquet", "format": "parquet"},
        "columns": [{"name": "id", "type": "int"}, {"name": "at", "type": "timestamptz"}],
        "primary_key": ["id"], "partitioning": {"column": "at", "granularity": "day", "start": "2024-01-01"},
        "load_mode": "cdc"})

    def batch(*rows: tuple[int, str, str, str]) -> pa.Table:
        return pa.table({
            "id": pa.array([r[0] for r in rows], pa.int64()),
            "at": pa.array([datetime.fromisoformat(r[1]) for r in rows], pa.timestamp("us", tz="UTC")),
            "_source_file": ["cdc/1.parquet"] * len(rows), "_batch_date": pa.array([date(2024, 3, 1)] * len(rows)),
            "_ingested_at": pa.array([INGESTED] * len(rows), pa.timestamp("us", tz="UTC")),
            "_op": [r[2] for r in rows], "_cdc_ts": pa.array([ts(r[3]) for r in rows], pa.timestamp("us")),
            "_cdc_seq": pa.nulls(len(rows), pa.string())})

    lake = new_lake(tmp_path)
    apply_changes(lake, spec, batch((1, "2024-01-01T23:30:00+00:00", "I", "2024-01-02 00:00"),
                                    (2, "2024-01-02T00:30:00+00:00", "I", "2024-01-02 01:00")), full_load=False)
    result = apply_changes(lake, spec, batch((2, "2024-01-02T00:30:00+00:00", "D", "2024-01-03 00:00")),
                           full_load=False)

    assert result.partitions_touched == 1  # 2 January (UTC) only
    remaining = lake.load_table("staged_courts", "events").scan().to_arrow()
    assert remaining["id"].to_pylist() == [1]


def test_a_new_column_in_the_changes_is_added_to_both_tables(tmp_path):
    lake, spec = new_lake(tmp_path), make_spec()
    apply_changes(lake, spec, changes(change(1, "I", "2024-01-05 10:00")), full_load=False)
    drifted = changes(change(2, "I", "2024-01-06 10:00")).append_column("judge", pa.array(["Smith"]))
    apply_changes(lake, spec, drifted, full_load=False)

    for table in ("cases", "cases_history"):
        assert [(r["id"], r["judge"]) for r in rows(lake, table)] == [(1, None), (2, "Smith")]


# --- merge-on-read: deletes by position, then compaction --------------------------------
def merged_lake(tmp_path) -> Lake:
    """Three merges into January and February: updates, a delete, a re-insert."""
    lake, spec = new_lake(tmp_path), make_spec()
    apply_changes(lake, spec, changes(*(change(i, "I", "2024-01-05 10:00", opened=date(2024, 1 + i % 2, 5))
                                        for i in range(1, 9))), full_load=False)
    apply_changes(lake, spec, changes(change(1, "U", "2024-01-06 10:00", "closed", opened=date(2024, 2, 5)),
                                      change(2, "D", "2024-01-06 10:00", opened=None),
                                      change(3, "U", "2024-01-06 10:00", "closed", opened=date(2024, 2, 5))),
                  full_load=False)
    apply_changes(lake, spec, changes(change(3, "U", "2024-01-07 10:00", "pending", opened=date(2024, 2, 5)),
                                      change(2, "I", "2024-01-07 10:00", opened=date(2024, 1, 5))), full_load=False)
    return lake


def readers_agree(lake: Lake) -> list[tuple]:
    """pyiceberg, DuckDB and the catalog's row count see the same live rows of both tables."""
    con = lake.connect()
    counts = {info.name: info.rows for info in lake.tables()}
    for table in ("cases", "cases_history"):
        by_pyiceberg = sorted((r["id"], r["status"], r.get("valid_from")) for r in rows(lake, table))
        columns = "id, status" + (", valid_from" if table == "cases_history" else ", NULL")
        by_duckdb = sorted(con.execute(f"SELECT {columns} FROM staged_courts.{table}").fetchall())
        assert by_duckdb == by_pyiceberg and counts[table] == len(by_pyiceberg), table
    return current(lake)


def test_merges_delete_replaced_rows_by_position_and_every_reader_agrees(tmp_path):
    lake = merged_lake(tmp_path)
    tasks = list(lake.load_table("staged_courts", "cases").scan().plan_files())
    assert any(t.delete_files for t in tasks)  # rows were deleted in place, not files rewritten
    assert readers_agree(lake) == [(1, "closed"), (2, "open"), (3, "pending")] + [(i, "open") for i in range(4, 9)]
    assert [h[1:] for h in history(lake) if h[0] == 2] == [
        ("I", "open", ts("2024-01-05 10:00"), ts("2024-01-06 10:00"), False),
        ("D", "open", ts("2024-01-06 10:00"), ts("2024-01-06 10:00"), False),
        ("I", "open", ts("2024-01-07 10:00"), None, True)]


def test_compaction_applies_the_deletes_and_removes_the_delete_files(tmp_path):
    from quayside.maintenance import MaintenanceSettings, maintain_table

    lake = merged_lake(tmp_path)
    before = readers_agree(lake), history(lake)
    for table in ("cases", "cases_history"):
        result = maintain_table(lake, "staged_courts", table, MaintenanceSettings(min_files_to_compact=2))
        assert result.partitions_compacted == 2 and result.data_files_after == 2, table
        assert not any(t.delete_files for t in lake.load_table("staged_courts", table).scan().plan_files())
    assert (readers_agree(lake), history(lake)) == before
    # Merges go on as before on the compacted files.
    apply_changes(lake, make_spec(), changes(change(4, "D", "2024-01-08 10:00", opened=date(2024, 1, 5))),
                  full_load=False)
    assert readers_agree(lake) == [r for r in before[0] if r[0] != 4]


def test_compaction_refuses_to_commit_when_a_merge_deleted_rows_of_its_files_meanwhile(tmp_path, monkeypatch):
    from quayside import maintenance

    lake = merged_lake(tmp_path)
    write = maintenance.write_slices

    def write_then_a_merge_commits(*args, **kwargs):
        files = write(*args, **kwargs)
        apply_changes(lake, make_spec(), changes(change(5, "U", "2024-01-08 10:00", "closed", opened=date(2024, 2, 5))),
                      full_load=False)
        return files

    monkeypatch.setattr(maintenance, "write_slices", write_then_a_merge_commits)
    with pytest.raises(maintenance.CompactionConflict, match="staged_courts.cases"):
        maintenance.maintain_table(lake, "staged_courts", "cases", maintenance.MaintenanceSettings())
    assert (5, "closed") in readers_agree(lake)  # the merge's change is not undone


def test_a_format_version_1_table_is_refused_delete_files_by_name(tmp_path):
    from quayside.iceberg_files import add_rows_and_deletes

    lake = new_lake(tmp_path)
    table = lake.create_table("staged_courts", "old_cases", pa.schema([("id", pa.int64())]), None,
                              {"format-version": "1"})
    merged = merged_lake(tmp_path / "other")
    [delete_file, *_] = {d for t in merged.load_table("staged_courts", "cases").scan().plan_files()
                         for d in t.delete_files}
    with pytest.raises(ValueError, match="staged_courts.old_cases is Iceberg format version 1"):
        add_rows_and_deletes(table, [], [delete_file])
