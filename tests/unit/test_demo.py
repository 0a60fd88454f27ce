"""The demo tenant: specs load, and the generator writes the same bytes for the same seed."""

from __future__ import annotations

import io
import posixpath

import pyarrow.parquet as pq
import pytest

from quayside.demo import DATASETS_DIR, DEMO_SPECS, UNMATCHED, demo_specs, generate
from quayside.lake import Lake, LakeSettings
from quayside.specs import load_specs


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    lake = Lake(LakeSettings(home=str(tmp_path_factory.mktemp("demo"))))
    return lake, generate(lake)


def digests(lake: Lake) -> dict[str, str]:
    return {f.key: lake.landing.sha256(f.key) for f in lake.landing.list()}


def test_every_spec_loads():
    specs = demo_specs()
    assert set(specs) == set(DEMO_SPECS)
    assert {s.key for s in specs.values()} <= {s.key for s in load_specs(DATASETS_DIR)}
    for spec in specs.values():
        assert spec.description and spec.owner
        assert all(c.description for c in spec.columns), spec.key


def test_same_seed_same_bytes_different_seed_different(demo, tmp_path):
    lake, summary = demo
    again = Lake(LakeSettings(home=str(tmp_path / "again")))
    assert generate(again).as_dict() | {"seconds": 0} == summary.as_dict() | {"seconds": 0}
    assert digests(again) == digests(lake)

    other = Lake(LakeSettings(home=str(tmp_path / "other")))
    generate(other, seed=8)
    first, second = digests(lake), digests(other)
    assert first.keys() == second.keys()
    changed = [k for k in first if first[k] != second[k]]
    assert any(k.startswith(s.source.location) for k in changed for s in demo_specs().values())
    assert len(changed) > len(first) // 2


def test_files_land_under_their_spec_and_match_its_pattern(demo):
    lake, summary = demo
    specs = {s.key: s for s in demo_specs().values()}
    written = {f.key for f in lake.landing.list()}
    assert written == {k for keys in summary.files.values() for k in keys}
    for dataset, keys in summary.files.items():
        if dataset == UNMATCHED:
            continue
        spec = specs[dataset]
        assert keys, dataset
        for key in keys:
            assert key.startswith(spec.source.location)
            assert spec.source.matches(posixpath.basename(key)), key
    for key in summary.files[UNMATCHED]:
        assert not any(s.source.matches(posixpath.basename(key)) for s in specs.values())


def test_row_counts_at_scale_one(demo):
    _, summary = demo
    assert summary.rows["prisons.population"] == 7 * 120 - 3
    assert summary.rows["monitoring.em_events"] == 7 * 5000
    assert summary.rows["legal_aid.payments"] == 2 * 3000
    assert summary.rows["courts.cases"] == 2000 + 600
    assert 0 < summary.current_rows["courts.cases"] < summary.rows["courts.cases"]


def test_dms_files_look_like_dms(demo):
    lake, summary = demo
    spec = demo_specs()["courts/cases"]
    keys = summary.files[spec.key]
    full = [k for k in keys if "LOAD" in k]
    assert [posixpath.basename(k) for k in full] == ["LOAD00000001.parquet", "LOAD00000002.parquet"]
    load = pq.read_table(io.BytesIO(lake.landing.read_bytes(full[0])))
    assert "Op" not in load.column_names and load.column("change_seq").null_count == load.num_rows
    changes = [pq.read_table(io.BytesIO(lake.landing.read_bytes(k))) for k in keys if k not in full]
    assert all(t.column_names[:3] == ["Op", "extraction_timestamp", "change_seq"] for t in changes)
    ops = {op for t in changes for op in t.column("Op").to_pylist()}
    assert ops == {"I", "U", "D"}
    # the last-named change file holds changes older than the one named before it
    on_time, late = changes[-2], changes[-1]
    assert max(late.column("change_seq").to_pylist()) < min(on_time.column("change_seq").to_pylist())
    assert {"U", "D"} <= set(late.column("Op").to_pylist())


def test_bad_files_exist(demo):
    lake, summary = demo
    bad = {b.key: b for b in summary.bad_files}
    for key in bad:
        assert lake.landing.info(key) is not None, key
    problems = " | ".join(b.problem for b in summary.bad_files)
    for word in ("malformed", "'lots'", "missing", "unexpected column", "0-byte", "copy", "truncated",
                 "battery_pct", "out of order", "matches no"):
        assert word in problems, word
    copy = next(k for k, b in bad.items() if "copy" in b.problem)
    assert lake.landing.sha256(copy) == lake.landing.sha256(
        f"prisons/population/{posixpath.basename(copy)}")
    truncated = next(k for k, b in bad.items() if "truncated" in b.problem)
    with pytest.raises(Exception):
        pq.read_table(io.BytesIO(lake.landing.read_bytes(truncated)))
    assert lake.landing.info(next(k for k, b in bad.items() if "0-byte" in b.problem)).size == 0


def test_scale_multiplies_rows(tmp_path):
    summary = generate(Lake(LakeSettings(home=str(tmp_path))), scale=0.1, days=3)
    assert summary.rows["monitoring.em_events"] == 3 * 500
    assert summary.rows["legal_aid.payments"] == 2 * 300
    assert len({k for keys in summary.files.values() for k in keys}) == summary.total_files  # no key written twice
