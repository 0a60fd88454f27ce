"""Staging's invariants when the trouble is not a file: storage failing mid-batch, two runs
staging one table at once, and a burst of thousands of small files."""

from __future__ import annotations

import threading
from datetime import date, timedelta
from pathlib import Path

import pytest

from quayside import checks, ingest, watch
from quayside.delivered import StorageUnavailable
from quayside.lake import Lake, LakeSettings
from tests.integration.test_ingest import DAY, HEADER, deliver, population_spec


def staged_ids(lake: Lake, spec) -> list[tuple]:
    return lake.connect().sql(f"SELECT establishment_code, snapshot_date, _source_file FROM "
                              f"{spec.staged_namespace}.{spec.name} ORDER BY ALL").fetchall()


def establishment(n: int) -> str:
    """The n-th three-letter establishment code (AAA, AAB, ...)."""
    return "".join(chr(65 + n // 26**i % 26) for i in (2, 1, 0))


def day_file(day: date, codes: list[str]) -> bytes:
    return HEADER + b"".join(f"{day},{code},{n},A\n".encode() for n, code in enumerate(codes))


class _ReadFails:
    """A storage stream whose reads fail, as a bucket that stops answering."""

    def __init__(self, stream):
        self._stream = stream

    def read(self, size=-1):
        raise ConnectionResetError("connection reset by peer")

    def close(self):
        self._stream.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.mark.parametrize("failure", ["open", "read"])
def test_storage_failing_mid_batch_fails_the_run_and_leaves_nothing_half_written(local_lake, monkeypatch, failure):
    spec = population_spec(source={"pattern": r"pop_(?P<date>\d{4}-\d{2}-\d{2})(_late)?\.csv"})
    deliver(local_lake, f"pop_{DAY}.csv", day_file(DAY, ["AAA", "BBB"]))
    ingest.land(local_lake, spec, run_id="first")
    ingest.stage(local_lake, spec, DAY, run_id="first")
    before = staged_ids(local_lake, spec)

    # A second delivery for the day, whose read fails; the first file of the batch reads fine.
    deliver(local_lake, f"pop_{DAY}_late.csv", day_file(DAY, ["CCC"]))
    ingest.land(local_lake, spec, run_id="second")
    warehouse = Path(local_lake.settings.home) / "warehouse"
    files_before = set(warehouse.rglob("*.parquet"))
    storage_type, real_open_stream = type(local_lake.raw), type(local_lake.raw).open_stream

    opened = []

    def failing(storage, key):
        if not key.endswith("_late.csv"):
            return real_open_stream(storage, key)
        opened.append(key)
        if failure == "open":
            raise ConnectionResetError("connection reset by peer")
        # The header is read; the storage goes down before the rows are.
        return real_open_stream(storage, key) if len(opened) == 1 else _ReadFails(real_open_stream(storage, key))

    monkeypatch.setattr(storage_type, "open_stream", failing)
    with pytest.raises(StorageUnavailable, match="_late.csv"):
        ingest.stage(local_lake, spec, DAY, run_id="second")
    assert staged_ids(local_lake, spec) == before, "the table as the first run left it"
    assert local_lake.connect().sql("SELECT count(*) FROM quarantine.files").fetchone()[0] == 0, \
        "a good file is never quarantined because storage failed"
    assert set(warehouse.rglob("*.parquet")) - files_before == set(), \
        "no data files left behind by the failed run"

    monkeypatch.setattr(storage_type, "open_stream", real_open_stream)
    report = ingest.stage(local_lake, spec, DAY, run_id="retry")  # the re-run finishes the batch
    assert report.rows_staged == 3 and report.reconciled
    assert [code for code, *_ in staged_ids(local_lake, spec)] == ["AAA", "BBB", "CCC"]


@pytest.mark.parametrize("table_exists", [False, True], ids=["new-table", "existing-table"])
def test_two_runs_staging_one_table_at_once_lose_and_double_nothing(tmp_path, table_exists):
    """Two runs (their own Lake, as two processes would have) stage the same day, and another day
    each, of one table at the same moment: both commit (one retrying), every row once."""
    home = str(tmp_path / "lake")
    spec = population_spec()
    first, second = DAY, DAY + timedelta(days=1)
    setup = Lake(LakeSettings(home=home))
    for day in (first, second):
        deliver(setup, f"pop_{day}.csv", day_file(day, [f"{c}{c}{c}" for c in "ABCDEFGH"]))
    ingest.land(setup, spec, run_id="land")
    if table_exists:
        ingest.stage(setup, spec, first, run_id="earlier")

    start, errors = threading.Barrier(2), []

    def run(days: list[date], run_id: str) -> None:
        lake = Lake(LakeSettings(home=home))
        start.wait()
        try:
            ingest.stage(lake, spec, days, run_id=run_id)
        except Exception as exc:  # noqa: BLE001 - reported below, with the run that failed
            errors.append(f"{run_id}: {exc!r}")

    runs = [threading.Thread(target=run, args=([first, second], "run-a")),
            threading.Thread(target=run, args=([first], "run-b"))]
    for thread in runs:
        thread.start()
    for thread in runs:
        thread.join()

    assert errors == []
    rows = staged_ids(setup, spec)
    assert len(rows) == len(set(rows)) == 16, "both days' rows, each once"
    loads = setup.connect().sql("SELECT raw_key, status, rows_staged FROM staged.loads ORDER BY 1").fetchall()
    assert [(status, n) for _, status, n in loads] == [("staged", 8), ("staged", 8)]
    outcome = checks.rows_reconcile(setup, spec)
    assert outcome.passed, outcome.description


@pytest.mark.slow
def test_a_burst_of_ten_thousand_small_files_is_ingested_once_in_a_few_runs(local_lake):
    """10,000 files of one dataset land at once, over five days: the sensor's poll hands them out
    as one batch per day (five runs, not ten thousand), each file is staged exactly once (in one
    data file a day), and a second poll finds nothing new to do."""
    days = [DAY + timedelta(days=n) for n in range(5)]
    spec = population_spec(source={"pattern": r"pop_(?P<date>\d{4}-\d{2}-\d{2})_\d+\.csv"})
    for day in days:
        for n in range(2000):
            deliver(local_lake, f"pop_{day}_{n:05d}.csv", day_file(day, [establishment(n)]))

    # A folder shows files as they are written: a file is taken once its size held for a tick.
    batches, cursor, listed = watch.poll(local_lake, spec, watch.LandingCursor(), latest_batch=days[-1])
    assert batches == [] and listed == len(cursor.pending) == 10_000
    batches, cursor, listed = watch.poll(local_lake, spec, cursor, latest_batch=days[-1])
    assert listed == 10_000 and [b.batch_date for b in batches] == days
    assert all(len(b.keys) == 2000 for b in batches)
    for batch in batches:  # one run per batch, as the sensor requests them
        ingest.land(local_lake, spec, keys=batch.keys, run_id=f"run-{batch.batch_date}")
        report = ingest.stage(local_lake, spec, batch.batch_date, run_id=f"run-{batch.batch_date}")
        assert report.rows_staged == 2000 and report.reconciled and not report.quarantined_files

    again, _, _ = watch.poll(local_lake, spec, cursor, latest_batch=days[-1])
    assert again == []
    con = local_lake.connect()
    assert con.sql(f"SELECT count(*), count(DISTINCT _source_file) FROM staged_prisons.population").fetchone() \
        == (10_000, 10_000)
    assert con.sql("SELECT count(*), count(DISTINCT raw_key) FROM staged.loads").fetchone() == (10_000, 10_000)
    table = local_lake.load_table(spec.staged_namespace, spec.name)
    assert len(table.inspect.files()) == 5  # the small files' rows written together: one data file a day
