"""quayside.publish: how dbt marts, Python assets and notebooks write tables into the lake."""

from __future__ import annotations

from datetime import date

import pyarrow as pa
import pytest

from quayside.publish import publish


def days_table(days: list[int], value: int = 1, extra: dict | None = None) -> pa.Table:
    columns = {"day": pa.array([date(2026, 11, d) for d in days]), "n": pa.array([value] * len(days), pa.int64())}
    return pa.table(columns | (extra or {}))


def rows(lake, name: str = "t") -> list[tuple]:
    return sorted(lake.connect().sql(f"SELECT day, n FROM curated_test.{name}").fetchall())


def test_publish_creates_then_replaces_the_whole_table(local_lake):
    publish(local_lake, "curated_test", "t", days_table([1, 2, 3]))
    first = local_lake.load_table("curated_test", "t").current_snapshot().snapshot_id
    publish(local_lake, "curated_test", "t", days_table([4], value=9))
    assert rows(local_lake) == [(date(2026, 11, 4), 9)]
    # The previous snapshot is still there for time travel (and for readers that began before the commit).
    previous = local_lake.load_table("curated_test", "t").scan(snapshot_id=first).to_arrow()
    assert previous.num_rows == 3


def test_a_range_replaces_only_its_days_and_is_idempotent(local_lake):
    publish(local_lake, "curated_test", "t", days_table([1, 2, 3]), partition_day="day")
    window = ("day", date(2026, 11, 2), date(2026, 11, 3))
    publish(local_lake, "curated_test", "t", days_table([2], value=7), replace_range=window)
    publish(local_lake, "curated_test", "t", days_table([2], value=7), replace_range=window)
    assert rows(local_lake) == [(date(2026, 11, 1), 1), (date(2026, 11, 2), 7), (date(2026, 11, 3), 1)]
    assert [f.name for f in local_lake.load_table("curated_test", "t").spec().fields] == ["day_day"]


def test_rows_outside_the_range_are_refused_and_nothing_is_written(local_lake):
    publish(local_lake, "curated_test", "t", days_table([1, 2]))
    before = local_lake.load_table("curated_test", "t").current_snapshot().snapshot_id
    with pytest.raises(ValueError, match=r"curated_test.t: 1 row\(s\) have day empty or outside"):
        publish(local_lake, "curated_test", "t", days_table([2, 5]),
                replace_range=("day", date(2026, 11, 2), date(2026, 11, 3)))
    assert local_lake.load_table("curated_test", "t").current_snapshot().snapshot_id == before


def test_new_columns_are_added_and_untyped_columns_are_refused(local_lake):
    publish(local_lake, "curated_test", "t", days_table([1]))
    publish(local_lake, "curated_test", "t", days_table([1], extra={"note": pa.array(["x"])}))
    assert "note" in local_lake.load_table("curated_test", "t").schema().column_names
    with pytest.raises(ValueError, match="note have no type"):
        publish(local_lake, "curated_test", "t", days_table([1], extra={"note": pa.nulls(1)}))


@pytest.mark.parametrize("namespace, name", [("curated_test", "t; drop table x"), ("../escape", "t")])
def test_table_names_are_identifiers(local_lake, namespace, name):
    with pytest.raises(ValueError):
        publish(local_lake, namespace, name, days_table([1]))


def test_notebooks_write_a_dataframe_back_with_quayside_write(tmp_path, monkeypatch):
    import pandas as pd

    import quayside

    monkeypatch.setenv("QUAYSIDE_HOME", str(tmp_path / "lake"))
    monkeypatch.setenv("QUAYSIDE_PROFILE", "local")
    quayside.write("curated_test", "estimates", pd.DataFrame({"prison": ["AAA", "BBB"], "estimate": [1.5, 2.5]}))
    assert quayside.connect().sql("SELECT sum(estimate) FROM curated_test.estimates").fetchone() == (4.0,)
