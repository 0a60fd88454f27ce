"""The landing cursor: a tick costs what is new; growing files wait; nothing is handed out twice."""

from __future__ import annotations

import os
from datetime import date

from quayside import ingest
from quayside.watch import LandingCursor, poll
from tests.integration.test_ingest import population_spec


def keys(batches):
    return sorted(k for b in batches for k in b.keys)


def test_new_files_are_batched_per_day_and_handed_out_once(local_lake):
    spec = population_spec()
    for day in ("01", "02"):
        local_lake.landing.write(f"prisons/population/pop_2026-11-{day}.csv", b"x")
    local_lake.landing.write("prisons/population/readme.txt", b"x")
    batches, cursor, _ = poll(local_lake, spec, LandingCursor())
    assert batches == []  # local files are taken once their size is stable across two looks
    batches, cursor, _ = poll(local_lake, spec, cursor)
    assert [(b.batch_date, len(b.keys)) for b in batches] == [(date(2026, 11, 1), 1), (date(2026, 11, 2), 1)]
    batches, cursor, listed = poll(local_lake, spec, cursor)
    assert batches == [] and listed == 0  # resumes after the last key: nothing old is listed again


def test_a_growing_file_waits_until_its_size_is_stable(local_lake):
    spec = population_spec()
    key = "prisons/population/pop_2026-11-01.csv"
    local_lake.landing.write(key, b"x")
    _, cursor, _ = poll(local_lake, spec, LandingCursor())
    with open(local_lake.landing.path(key), "ab") as f:
        f.write(b"more")
    batches, cursor, _ = poll(local_lake, spec, cursor)
    assert batches == [] and key in cursor.pending
    batches, cursor, _ = poll(local_lake, spec, cursor)
    assert keys(batches) == [key] and not cursor.pending


def test_files_of_a_day_without_a_partition_wait(local_lake):
    spec = population_spec()
    local_lake.landing.write("prisons/population/pop_2026-11-05.csv", b"x")
    _, cursor, _ = poll(local_lake, spec, LandingCursor(), latest_batch=date(2026, 11, 4))
    batches, cursor, _ = poll(local_lake, spec, cursor, latest_batch=date(2026, 11, 4))
    assert batches == []
    batches, _, _ = poll(local_lake, spec, cursor, latest_batch=date(2026, 11, 5))
    assert keys(batches) == ["prisons/population/pop_2026-11-05.csv"]


def test_the_periodic_sweep_finds_late_files_that_sort_before_the_cursor(local_lake):
    spec = population_spec()
    local_lake.landing.write("prisons/population/pop_2026-11-09.csv", b"x")
    _, cursor, _ = poll(local_lake, spec, LandingCursor(), sweep_every=3)
    batches, cursor, _ = poll(local_lake, spec, cursor, sweep_every=3)
    ingest.land(local_lake, spec, batches[0].keys)  # what the requested run does
    local_lake.landing.write("prisons/population/pop_2026-11-01.csv", b"x")  # sorts before the cursor
    found = []
    for _ in range(4):  # the third tick sweeps and sees it; the next one finds its size stable
        batches, cursor, _ = poll(local_lake, spec, cursor, sweep_every=3)
        found += keys(batches)
    assert found == ["prisons/population/pop_2026-11-01.csv"]


def test_cursor_round_trips_as_json():
    cursor = LandingCursor(after="a", pending={"b": 3}, dispatched=["c"], ticks=4)
    assert LandingCursor.parse(cursor.dump()) == cursor


def test_thousands_of_new_files_make_one_batch_per_day_not_a_run_storm(local_lake):
    spec = population_spec(source={"pattern": r"pop_(?P<date>\d{4}-\d{2}-\d{2})\.\d+\.csv"})
    root = local_lake.landing.path("prisons/population")
    os.makedirs(root)
    for i in range(3000):
        with open(f"{root}/pop_2026-11-0{1 + i % 3}.{i:05d}.csv", "wb"):
            pass
    _, cursor, listed = poll(local_lake, spec, LandingCursor())
    batches, cursor, _ = poll(local_lake, spec, cursor)
    assert listed == 3000 and [len(b.keys) for b in batches] == [1000, 1000, 1000]
    _, _, listed = poll(local_lake, spec, cursor)
    assert listed == 0
