"""landing → raw → staged | quarantine, on both profiles, with every kind of bad input."""

from __future__ import annotations

import io
from pathlib import Path
from datetime import date, datetime
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.expressions import EqualTo

from quayside import checks, ingest
from quayside.lake import _ReadBehind as ReadBehind
from quayside.specs import DatasetSpec

DAY = date(2026, 11, 1)
HEADER = b"snapshot_date,establishment_code,population,category\n"


def population_spec(**overrides) -> DatasetSpec:
    spec = {
        "name": "population", "domain": "prisons", "description": "Daily population", "owner": "team:prisons",
        "source": {"location": "prisons/population/", "pattern": r"pop_(?P<date>\d{4}-\d{2}-\d{2})\.(csv|parquet|jsonl)",
                   "format": "csv"},
        "columns": [
            {"name": "snapshot_date", "type": "date", "nullable": False},
            {"name": "establishment_code", "type": "string", "nullable": False, "pattern": "^[A-Z]{3}$"},
            {"name": "population", "type": "int", "min": 0},
            {"name": "category", "type": "string", "enum": ["A", "B", "C"]},
        ],
        "primary_key": ["snapshot_date", "establishment_code"],
        "partitioning": {"column": "snapshot_date", "granularity": "day", "start": "2026-10-01"},
    }
    for key, value in overrides.items():
        spec[key] = value if not isinstance(value, dict) or key not in spec else spec[key] | value
    return DatasetSpec.model_validate(spec)


def deliver(lake, name: str, body: bytes, spec: DatasetSpec | None = None) -> str:
    key = f"prisons/population/{name}"
    lake.landing.write(key, body)
    return key


def run(lake, spec: DatasetSpec, day: date = DAY) -> ingest.StageReport:
    ingest.land(lake, spec, run_id="test")
    return ingest.stage(lake, spec, day, run_id="test")


def staged_rows(lake, spec) -> list[tuple]:
    return lake.connect().sql(f"SELECT establishment_code, population FROM {spec.staged_namespace}.{spec.name} "
                              "ORDER BY 1").fetchall()


def quarantined(lake, what: str = "rows") -> list[dict]:
    return lake.connect().sql(f"SELECT * FROM quarantine.{what} ORDER BY raw_key").arrow().read_all().to_pylist()


def test_good_file_lands_typed_with_lineage_and_raw_copy(lake):
    spec = population_spec()
    key = deliver(lake, "pop_2026-11-01.csv", HEADER + b"2026-11-01,AAA,10,A\n2026-11-01,BBB,20,B\n")
    report = run(lake, spec)
    assert (report.rows_in, report.rows_staged, report.rows_quarantined) == (2, 2, 0)
    assert staged_rows(lake, spec) == [("AAA", 10), ("BBB", 20)]
    manifest = lake.connect().sql("SELECT landing_key, raw_key, sha256, status FROM raw.manifest").fetchall()
    (landing_key, raw_key, sha, status), = manifest
    assert landing_key == key and status == "accepted"
    assert raw_key.startswith("prisons/population/ingest_date=") and raw_key.endswith("/pop_2026-11-01.csv")
    assert lake.raw.read_bytes(raw_key) == lake.landing.read_bytes(key)  # byte-identical raw copy
    assert lake.raw.sha256(raw_key) == sha
    lineage = lake.connect().sql("SELECT DISTINCT _source_file, _batch_date FROM staged_prisons.population").fetchall()
    assert lineage == [(raw_key, DAY)]
    assert all(checks.rows_reconcile(lake, spec).passed for _ in [0])


def test_wrong_type_rows_are_quarantined_and_good_rows_land(lake):
    spec = population_spec()
    deliver(lake, "pop_2026-11-01.csv", HEADER + b"2026-11-01,AAA,10,A\n2026-11-01,BBB,lots,B\n2026-11-01,cc,5,Z\n")
    report = run(lake, spec)
    assert (report.rows_in, report.rows_staged, report.rows_quarantined) == (3, 1, 2)
    assert staged_rows(lake, spec) == [("AAA", 10)]
    rows = {r["row_number"]: r for r in quarantined(lake)}
    assert rows[2]["field"] == "population" and "not a valid int: lots" in rows[2]["reason"]
    assert rows[3]["field"] == "establishment_code" and "pattern" in rows[3]["reason"]
    assert '"population":"lots"' in rows[2]["record"]  # the original record is kept
    outcome = checks.rows_reconcile(lake, spec)
    assert outcome.passed and outcome.metadata["rows_in"] == 3


def test_malformed_csv_goes_to_quarantine_whole_and_other_files_still_land(lake):
    spec = population_spec()
    deliver(lake, "pop_2026-11-01.csv", HEADER + b"2026-11-01,AAA,10,A\n")
    deliver(lake, "sub/pop_2026-11-01.csv", HEADER + b'2026-11-01,"BBB,20,B\n2026-11-01,CCC,1,A\n')
    report = run(lake, spec)
    assert staged_rows(lake, spec) == [("AAA", 10)]
    (bad,) = quarantined(lake, "files")
    assert "malformed CSV" in bad["reason"] and "prisons.population" in bad["reason"]
    assert bad["raw_key"].endswith("pop_2026-11-01.csv") and bad["raw_key"] != report.files[0] or True
    assert lake.quarantine.read_bytes(bad["quarantine_key"]).startswith(HEADER)


def test_ragged_rows_are_quarantined_one_by_one(lake):
    spec = population_spec()
    deliver(lake, "pop_2026-11-01.csv", HEADER + b"2026-11-01,AAA,10,A\n2026-11-01,BBB\n2026-11-01,CCC,1,A,extra\n")
    report = run(lake, spec)
    assert (report.rows_in, report.rows_staged, report.rows_quarantined) == (3, 1, 2)
    assert all("malformed CSV row" in r["reason"] for r in quarantined(lake))


def test_missing_required_column_names_dataset_file_and_field(lake):
    spec = population_spec()
    deliver(lake, "pop_2026-11-01.csv", b"snapshot_date,population\n2026-11-01,10\n")
    run(lake, spec)
    (bad,) = quarantined(lake, "files")
    assert bad["field"] == "establishment_code"
    assert bad["reason"].startswith("prisons.population: prisons/population/ingest_date=")
    assert "required column 'establishment_code' is missing" in bad["reason"]


def test_unexpected_column_is_quarantined_under_quarantine_policy(lake):
    spec = population_spec()
    deliver(lake, "pop_2026-11-01.csv", b"snapshot_date,establishment_code,population,category,wing\n"
                                         b"2026-11-01,AAA,10,A,north\n")
    run(lake, spec)
    (bad,) = quarantined(lake, "files")
    assert bad["field"] == "wing" and "unexpected column 'wing'" in bad["reason"]


def test_unexpected_column_evolves_the_table_under_evolve_policy(lake):
    spec = population_spec(schema_drift="evolve")
    deliver(lake, "pop_2026-11-01.csv", HEADER + b"2026-11-01,AAA,10,A\n")
    run(lake, spec)
    deliver(lake, "pop_2026-11-02.csv", b"snapshot_date,establishment_code,population,category,wing\n"
                                         b"2026-11-02,AAA,11,A,north\n")
    report = run(lake, spec, date(2026, 11, 2))
    assert report.new_columns == ["wing"]
    rows = lake.connect().sql("SELECT snapshot_date, wing FROM staged_prisons.population ORDER BY 1").fetchall()
    assert rows == [(DAY, None), (date(2026, 11, 2), "north")]
    assert checks.schema_conforms(lake, spec).metadata["drifted_columns"] == ["wing"]


def test_empty_file_is_quarantined(lake):
    spec = population_spec()
    deliver(lake, "pop_2026-11-01.csv", b"")
    run(lake, spec)
    (bad,) = quarantined(lake, "files")
    assert "empty file" in bad["reason"]


def test_duplicate_delivery_is_kept_once(lake):
    spec = population_spec()
    body = HEADER + b"2026-11-01,AAA,10,A\n"
    deliver(lake, "pop_2026-11-01.csv", body)
    deliver(lake, "resend/pop_2026-11-01.csv", body)
    report = ingest.land(lake, spec)
    assert len(report.accepted) == 1 and len(report.duplicates) == 1
    ingest.stage(lake, spec, DAY)
    assert staged_rows(lake, spec) == [("AAA", 10)]
    statuses = sorted(lake.connect().sql("SELECT status FROM raw.manifest").fetchall())
    assert statuses == [("accepted",), ("duplicate",)]


def test_truncated_parquet_is_quarantined(lake):
    spec = population_spec(source={"format": "parquet"})
    buf = io.BytesIO()
    pq.write_table(pa.table({"snapshot_date": [DAY] * 500, "establishment_code": ["AAA"] * 500,
                             "population": list(range(500)), "category": ["A"] * 500}), buf)
    deliver(lake, "pop_2026-11-01.parquet", buf.getvalue()[: len(buf.getvalue()) // 2])
    run(lake, spec)
    (bad,) = quarantined(lake, "files")
    assert "cannot read parquet" in bad["reason"]


def test_parquet_and_jsonl_are_typed_to_the_spec(lake):
    spec = population_spec(source={"format": "parquet"})
    buf = io.BytesIO()
    pq.write_table(pa.table({"snapshot_date": ["2026-11-01"], "establishment_code": ["AAA"],
                             "population": pa.array([7], pa.int32()), "category": ["A"]}), buf)
    deliver(lake, "pop_2026-11-01.parquet", buf.getvalue())
    run(lake, spec)
    assert staged_rows(lake, spec) == [("AAA", 7)]
    json_spec = population_spec(name="population_json", source={"format": "jsonl", "location": "prisons/json/"})
    lake.landing.write("prisons/json/pop_2026-11-01.jsonl",
                       b'{"snapshot_date": "2026-11-01", "establishment_code": "AAA", "population": 3, "category": "A"}\n'
                       b'{"snapshot_date": "2026-11-01", "establishment_code": "BBB", "population": "x", "category": "A"}\n')
    report = run(lake, json_spec)
    assert (report.rows_staged, report.rows_quarantined) == (1, 1)
    assert quarantined(lake)[0]["record"].startswith('{"snapshot_date"')


def test_rerun_is_idempotent(lake):
    spec = population_spec()
    deliver(lake, "pop_2026-11-01.csv", HEADER + b"2026-11-01,AAA,10,A\n2026-11-01,BBB,x,A\n")
    run(lake, spec)
    run(lake, spec)
    ingest.stage(lake, spec, DAY)
    assert staged_rows(lake, spec) == [("AAA", 10)]
    assert len(quarantined(lake)) == 1
    assert lake.connect().sql("SELECT count(*) FROM raw.manifest").fetchone() == (1,)
    assert checks.rows_reconcile(lake, spec).passed and checks.primary_key_unique(lake, spec).passed


def test_a_backfill_range_is_staged_in_one_commit_and_replaces_only_its_days(lake):
    spec = population_spec()
    for day in (1, 2, 3):
        deliver(lake, f"pop_2026-11-0{day}.csv", HEADER + f"2026-11-0{day},AAA,{day},A\n".encode())
    ingest.land(lake, spec, run_id="test")
    ingest.stage(lake, spec, date(2026, 11, 1))
    staged = lambda: lake.load_table(spec.staged_namespace, spec.name)  # noqa: E731
    before = len(staged().metadata.snapshots)
    report = ingest.stage(lake, spec, [date(2026, 11, 2), date(2026, 11, 3)])
    assert report.batch_dates == [date(2026, 11, 2), date(2026, 11, 3)] and report.rows_staged == 2
    assert len(staged().metadata.snapshots) - before <= 2  # one overwrite: a delete and an append snapshot
    assert lake.connect().sql(f"SELECT population FROM {spec.staged_namespace}.{spec.name} ORDER BY 1").fetchall() == [
        (1,), (2,), (3,)]
    ingest.stage(lake, spec, [date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)])  # re-run: same rows
    assert checks.rows_reconcile(lake, spec).passed and checks.primary_key_unique(lake, spec).passed
    assert lake.connect().sql(f"SELECT count(*) FROM {spec.staged_namespace}.{spec.name}").fetchone() == (3,)


def test_duplicate_primary_key_within_a_batch_is_quarantined(lake):
    spec = population_spec()
    deliver(lake, "pop_2026-11-01.csv", HEADER + b"2026-11-01,AAA,10,A\n2026-11-01,AAA,11,A\n")
    report = run(lake, spec)
    assert (report.rows_staged, report.rows_quarantined) == (1, 1)
    (row,) = quarantined(lake)
    assert "duplicate primary key" in row["reason"] and row["row_number"] == 2


def many_rows(count: int, bad: dict[int, bytes] | None = None) -> bytes:
    """`count` rows with distinct keys; `bad` replaces the rows at those (1-based) numbers."""
    rows = [b"2026-11-01,%s,%d,A\n" % (f"{chr(65 + i // 676)}{chr(65 + i // 26 % 26)}{chr(65 + i % 26)}".encode(), i)
            for i in range(count)]
    for number, line in (bad or {}).items():
        rows[number - 1] = line
    return HEADER + b"".join(rows)


@pytest.fixture
def small_chunks(monkeypatch):
    """CSV files are read in chunks of ~1 kB (a few dozen rows), as a multi-GB file is in 64 MB chunks."""
    monkeypatch.setattr(ingest, "CSV_BLOCK_BYTES", 1024)
    monkeypatch.setattr(ingest, "PARQUET_BATCH_ROWS", 100)
    monkeypatch.setattr(ingest, "CHUNK_BYTES", 1024)
    monkeypatch.setattr(ingest, "HELD_BYTES", 1024)  # each chunk its own data file


def test_a_file_is_staged_in_chunks_with_file_row_numbers_and_duplicates_across_chunks(local_lake, small_chunks):
    spec = population_spec()
    deliver(local_lake, "pop_2026-11-01.csv", many_rows(2000, {1500: b"2026-11-01,ZZZ,-1,A\n",
                                                             1900: b"2026-11-01,AAB,7,A\n"}))
    report = run(local_lake, spec)
    assert (report.rows_in, report.rows_staged, report.rows_quarantined) == (2000, 1998, 2)
    reasons = {r["row_number"]: r["reason"] for r in quarantined(local_lake)}
    assert reasons.keys() == {1500, 1900}  # numbered within the file, not within a chunk
    assert "below the minimum" in reasons[1500] and "duplicate primary key" in reasons[1900]
    table = local_lake.load_table(spec.staged_namespace, spec.name)
    assert len(table.inspect.files()) > 10  # really written chunk by chunk


# Rules Arrow's aggregates can prove hold (no pattern): each broken by one row of a typed file.
TYPED_RULES = [("required", {"population": None}, "population: required value is missing"),
               ("enum", {"category": "D"}, "category: not one of A, B, C: D"),
               ("minimum", {"population": -1}, "population: below the minimum 0: -1"),
               ("maximum", {"snapshot_date": date(2026, 12, 2)}, "snapshot_date: above the maximum 2026-12-01: 2026-12-02"),
               ("decimal bound", {"rate": "100.01"}, "rate: above the maximum 100: 100.01")]


@pytest.mark.parametrize("broken, row, reason", TYPED_RULES, ids=[rule for rule, *_ in TYPED_RULES])
def test_each_rule_finds_its_row_in_typed_data(local_lake, broken, row, reason):
    spec = population_spec(source={"format": "parquet"}, primary_key=["establishment_code"], partitioning=None,
                           columns=[{"name": "snapshot_date", "type": "date", "max": "2026-12-01"},
                                    {"name": "establishment_code", "type": "string", "nullable": False},
                                    {"name": "population", "type": "int", "nullable": False, "min": 0},
                                    {"name": "category", "type": "string", "enum": ["A", "B", "C"]},
                                    {"name": "rate", "type": "decimal(5,2)", "min": 0, "max": 100}])
    rows = [{"snapshot_date": DAY, "establishment_code": f"E{i:03d}", "population": i, "category": "ABC"[i % 3],
             "rate": "12.50"} for i in range(300)]
    rows[200] |= row
    schema = pa.schema([("snapshot_date", pa.date32()), ("establishment_code", pa.string()),
                        ("population", pa.int64()), ("category", pa.string()), ("rate", pa.decimal128(5, 2))])
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist([r | {"rate": Decimal(r["rate"])} for r in rows], schema), buf)
    deliver(local_lake, "pop_2026-11-01.parquet", buf.getvalue())
    report = run(local_lake, spec)
    assert (report.rows_in, report.rows_staged, report.rows_quarantined) == (300, 299, 1)
    (bad,) = quarantined(local_lake)
    assert (bad["row_number"], bad["reason"]) == (201, reason)


def stage_with_one_bad_line(lake, line: int, text: bytes) -> dict:
    """2,000 rows in one CSV with `text` as row `line`, staged: its one quarantined row."""
    deliver(lake, "pop_2026-11-01.csv", many_rows(2000, {line: text}))
    report = run(lake, population_spec())
    assert (report.rows_in, report.rows_staged, report.rows_quarantined) == (2000, 1999, 1)
    (row,) = quarantined(lake)
    return row


def test_a_value_that_does_not_parse_late_in_a_file_reads_the_rest_as_text(local_lake, small_chunks):
    row = stage_with_one_bad_line(local_lake, 1700, b"2026-11-01,ZZZ,12x,A\n")
    assert row["row_number"] == 1700 and "population: not a valid int: 12x" in row["reason"]
    assert local_lake.connect().sql("SELECT count(DISTINCT establishment_code), sum(population) "
                                    "FROM staged_prisons.population").fetchone() == (1999, sum(range(2000)) - 1699)


def test_a_malformed_row_late_in_a_file_leaves_no_trace_of_the_chunks_already_written(local_lake, small_chunks):
    spec = population_spec()
    row = stage_with_one_bad_line(local_lake, 1800, b"2026-11-01,ZZZ\n")
    assert row["row_number"] == 1801 and "malformed CSV row" in row["reason"]  # DuckDB counts the header line
    table = local_lake.load_table(spec.staged_namespace, spec.name)
    referenced = {Path(p).name for p in table.inspect.files()["file_path"].to_pylist()}
    on_disk = {p.name for p in Path(table.location().removeprefix("file://"), "data").rglob("*.parquet")}
    assert on_disk == referenced  # the abandoned first read's data files were deleted


def test_small_files_are_written_together_and_a_file_that_fails_midway_leaves_none_of_its_rows(local_lake, monkeypatch):
    """Chunks of a few dozen rows, all held to be written as one data file: a malformed row late in
    a file sends it back to be read again, and none of its first read's held rows stay."""
    monkeypatch.setattr(ingest, "CSV_BLOCK_BYTES", 1024)
    monkeypatch.setattr(ingest, "CHUNK_BYTES", 4096)
    monkeypatch.setattr(ingest, "HELD_BYTES", 1 << 20)
    spec = population_spec(source={"pattern": r"pop_(?P<date>\d{4}-\d{2}-\d{2})_\d+\.csv"})
    small = [HEADER + b"".join(b"2026-11-01,Y%c%c,1,A\n" % (65 + n, 65 + i) for i in range(2)) for n in range(20)]
    for n, body in enumerate(small[:10] + [many_rows(2000, {1800: b"2026-11-01,ZZZ\n"})] + small[10:]):
        deliver(local_lake, f"pop_2026-11-01_{n:02d}.csv", body)
    report = run(local_lake, spec)
    assert (report.rows_in, report.rows_staged, report.rows_quarantined) == (2040, 2039, 1)
    assert len(local_lake.load_table(spec.staged_namespace, spec.name).inspect.files()) == 1
    assert local_lake.connect().sql("SELECT count(*), count(DISTINCT establishment_code) "
                                    "FROM staged_prisons.population").fetchone() == (2039, 2039)


def test_a_parquet_file_is_staged_in_chunks_with_file_row_numbers(local_lake, small_chunks):
    spec = population_spec(source={"format": "parquet"})
    codes = [f"{chr(65 + i // 676)}{chr(65 + i // 26 % 26)}{chr(65 + i % 26)}" for i in range(3000)]
    buf = io.BytesIO()
    pq.write_table(pa.table({"snapshot_date": [DAY] * 3000, "establishment_code": codes,
                             "population": [-1 if i == 2499 else i for i in range(3000)],
                             "category": ["A"] * 3000}), buf, row_group_size=500)
    deliver(local_lake, "pop_2026-11-01.parquet", buf.getvalue())
    report = run(local_lake, spec)
    assert (report.rows_in, report.rows_staged, report.rows_quarantined) == (3000, 2999, 1)
    (row,) = quarantined(local_lake)
    assert row["row_number"] == 2500 and "below the minimum" in row["reason"]
    assert len(local_lake.load_table(spec.staged_namespace, spec.name).inspect.files()) > 2


def test_after_ingest_delete_removes_landing_only_after_verified_copy(lake):
    spec = population_spec(source={"after_ingest": "delete"})
    key = deliver(lake, "pop_2026-11-01.csv", HEADER + b"2026-11-01,AAA,10,A\n")
    report = ingest.land(lake, spec)
    assert lake.landing.info(key) is None
    assert lake.raw.info(report.accepted[0]["raw_key"]).size == len(HEADER) + 20


def test_a_failed_verify_midway_keeps_every_source_and_leaves_no_copies_behind(lake, monkeypatch):
    spec = population_spec(source={"after_ingest": "delete"})
    keys = [deliver(lake, f"pop_2026-11-0{day}.csv", HEADER + f"2026-11-0{day},AAA,{day},A\n".encode())
            for day in range(1, 7)]
    calls = []

    def wrong_on_second_call(read_back):  # the second copy reads back wrong
        def check(*args) -> str:
            calls.append(args)
            return "0" * 64 if len(calls) == 2 else read_back(*args)
        return check

    # A local copy is read back as it is written; an S3 copy once placed.
    monkeypatch.setattr(lake.raw, "sha256", wrong_on_second_call(lake.raw.sha256))
    monkeypatch.setattr(ReadBehind, "hexdigest", wrong_on_second_call(ReadBehind.hexdigest))
    with pytest.raises(ingest.IngestError, match="does not match its sha256"):
        ingest.land(lake, spec)
    assert all(lake.landing.info(key) is not None for key in keys)
    assert list(lake.raw.list("_incoming/")) == []  # the copies made ahead of the failure are gone
    assert ingest.read_system(lake, "raw", "manifest", EqualTo("dataset", spec.key)).num_rows == 0
    monkeypatch.undo()
    assert len(ingest.land(lake, spec).accepted) == 6  # a re-run takes them all


def test_files_that_match_no_spec_are_not_taken(lake):
    spec = population_spec()
    deliver(lake, "readme.txt", b"hello")
    deliver(lake, "pop_2026-11-01.csv", HEADER + b"2026-11-01,AAA,10,A\n")
    report = ingest.land(lake, spec)
    assert [r["original_name"] for r in report.accepted] == ["pop_2026-11-01.csv"]


def test_pii_values_never_appear_in_reasons(local_lake):
    columns = population_spec().model_dump()["columns"]
    columns[1] |= {"pii": True}
    spec = population_spec(columns=columns)
    deliver(local_lake, "pop_2026-11-01.csv", HEADER + b"2026-11-01,secret-name,10,A\n")
    run(local_lake, spec)
    (row,) = quarantined(local_lake)
    assert "secret-name" not in row["reason"]


@pytest.mark.parametrize("key", ["../outside.csv", "prisons/population/../../../etc/passwd", "/etc/passwd"])
def test_path_traversal_names_from_run_config_are_refused(local_lake, key):
    with pytest.raises(ValueError, match="relative|'..'"):
        ingest.land(local_lake, population_spec(), keys=[key])


def cases_spec() -> DatasetSpec:
    return DatasetSpec.model_validate({
        "name": "cases", "domain": "courts", "description": "Court cases (DMS)", "owner": "team:courts",
        "source": {"location": "courts/cases/", "pattern": r"(LOAD\d+|\d{8}-\d{9})\.parquet", "format": "parquet"},
        "columns": [{"name": "case_id", "type": "string", "nullable": False},
                    {"name": "received_date", "type": "date", "nullable": False},
                    {"name": "status", "type": "string", "nullable": False, "enum": ["open", "closed"]}],
        "primary_key": ["case_id"], "load_mode": "cdc",
        "partitioning": {"column": "received_date", "granularity": "month", "start": "2026-01-01"},
        "cdc": {"sequence_column": "change_seq"},
    })


def parquet(**columns) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf)
    return buf.getvalue()


def test_dms_full_load_then_changes_with_key_only_deletes(lake):
    spec = cases_spec()
    ts = [pa.scalar(datetime(2026, 11, 1, 9), pa.timestamp("us"))] * 3
    lake.landing.write("courts/cases/LOAD00000001.parquet", parquet(
        case_id=["C1", "C2", "C3"], received_date=[DAY] * 3, status=["open"] * 3,
        extraction_timestamp=pa.array(ts)))
    later = pa.array([datetime(2026, 11, 2, 9, i) for i in range(4)], pa.timestamp("us"))
    lake.landing.write("courts/cases/20261102-090000000.parquet", parquet(
        Op=["U", "D", "I", "X"], extraction_timestamp=later, change_seq=["1", "2", "3", "4"],
        case_id=["C1", "C2", "C4", "C5"], received_date=[DAY, None, DAY, DAY],
        status=["closed", None, "open", "open"]))
    ingest.land(lake, spec)
    report = ingest.stage(lake, spec)
    assert (report.rows_in, report.rows_staged, report.rows_quarantined) == (7, 6, 1)
    (bad,) = quarantined(lake)
    assert bad["field"] == "Op" and "not one of I, U, D" in bad["reason"]
    current = lake.connect().sql("SELECT case_id, status FROM staged_courts.cases ORDER BY 1").fetchall()
    assert current == [("C1", "closed"), ("C3", "open"), ("C4", "open")]  # C2's key-only delete applied
    history = lake.connect().sql("SELECT case_id, op, is_current FROM staged_courts.cases_history "
                                 "WHERE case_id IN ('C1', 'C2') ORDER BY case_id, valid_from").fetchall()
    assert history == [("C1", "I", False), ("C1", "U", True), ("C2", "I", False), ("C2", "D", False)]
    assert ingest.stage(lake, spec).files == []  # everything applied: a re-run has nothing to do
    assert checks.rows_reconcile(lake, spec).passed and checks.primary_key_unique(lake, spec).passed
