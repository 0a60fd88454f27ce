"""Batch de-duplication by primary key (`_SeenKeys`): exact whatever the chunking, and a file that
fails midway is forgotten."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from quayside.ingest import _SeenKeys
from quayside.specs import DatasetSpec

SPEC = DatasetSpec.model_validate({
    "name": "keys", "domain": "test", "description": "keys", "owner": "team:test",
    "source": {"location": "test/keys/", "pattern": r".*\.csv", "format": "csv"},
    "primary_key": ["id", "region"],
    "columns": [{"name": "id", "type": "int"}, {"name": "region", "type": "string"}],
})


def _chunk(ids: np.ndarray, regions: np.ndarray) -> pa.Table:
    return pa.table({"id": ids, "region": regions, "_row": np.arange(1, len(ids) + 1)})


def _file(name: str) -> dict:
    return {"raw_key": name, "batch_date": None}


def test_every_repeated_key_and_only_those_is_rejected_across_chunks_and_files():
    rng = np.random.default_rng(7)
    seen, kept, expected = _SeenKeys(SPEC), [], set()
    try:
        for file in range(4):
            seen.begin()
            for _ in range(5):  # 20 chunks of 20k keys drawn from 300k: many repeats, most new
                ids = rng.integers(0, 150_000, 20_000)
                regions = np.array(["north", "south"])[rng.integers(0, 2, 20_000)]
                staged, rejected = seen.split(_chunk(ids, regions), _file(f"f{file}.csv"),
                                              lambda: pa.concat_tables(kept).select(["id", "region"]))
                want_new = []
                for key in zip(ids.tolist(), regions.tolist()):
                    want_new.append(key not in expected)
                    expected.add(key)
                assert staged.num_rows == sum(want_new) and len(rejected) == len(ids) - sum(want_new)
                assert list(zip(staged["id"].to_pylist(), staged["region"].to_pylist())) == [
                    k for k, new in zip(zip(ids.tolist(), regions.tolist()), want_new) if new]
                assert all(r["reason"].startswith("duplicate primary key") and r["raw_key"] == f"f{file}.csv"
                           for r in rejected)
                kept.append(staged)
    finally:
        seen.close()


def test_a_rolled_back_file_is_forgotten():
    seen = _SeenKeys(SPEC)
    try:
        first = _chunk(np.arange(1000), np.array(["north"] * 1000))
        seen.begin()
        seen.split(first, _file("a.csv"), lambda: first.schema.empty_table())
        seen.rollback()  # a.csv failed midway: its keys were never staged
        seen.begin()
        staged, rejected = seen.split(first, _file("a.csv"), lambda: first.schema.empty_table().select(["id", "region"]))
        assert staged.num_rows == 1000 and rejected == []
        again, rejected = seen.split(_chunk(np.array([5, 1000]), np.array(["north", "north"])), _file("b.csv"),
                                     lambda: staged.select(["id", "region"]))
        assert again["id"].to_pylist() == [1000] and [r["row_number"] for r in rejected] == [1]
    finally:
        seen.close()


def test_a_chunk_of_nothing_but_repeats_leaves_the_next_chunks_exact():
    seen = _SeenKeys(SPEC)
    try:
        seen.begin()
        first = _chunk(np.arange(100), np.array(["north"] * 100))
        seen.split(first, _file("a.csv"), lambda: first.schema.empty_table())
        staged, rejected = seen.split(first.slice(10, 20), _file("a.csv"), lambda: first.select(["id", "region"]))
        assert staged.num_rows == 0 and len(rejected) == 20  # every key seen before: nothing new to remember
        staged, rejected = seen.split(_chunk(np.array([50, 100]), np.array(["north", "north"])), _file("a.csv"),
                                      lambda: first.select(["id", "region"]))
        assert staged["id"].to_pylist() == [100] and [r["row_number"] for r in rejected] == [1]
    finally:
        seen.close()
