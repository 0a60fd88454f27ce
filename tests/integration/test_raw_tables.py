"""The raw zone as Hive tables `raw_<domain>.<name>`: Glue tables with partitions on moto (aws),
DuckDB views over the raw files (local), for CSV, JSON Lines and Parquet."""

from __future__ import annotations

import gzip
import io
import json
import zipfile
from datetime import date, datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from quayside import ingest, raw_tables
from quayside.specs import DatasetSpec
from tests.conftest import drop_all_tables, make_aws_lake
from tests.integration.test_ingest import population_spec

DAY1, DAY2, DAY3 = date(2026, 11, 1), date(2026, 11, 2), date(2026, 11, 3)
PATTERN = r"pop_(?P<date>\d{4}-\d{2}-\d{2})(_\w+)?\.(csv|jsonl|parquet)(\.gz|\.zip)?"
FORMATS = ("csv", "jsonl", "parquet")


def spec_for(fmt: str, source: dict | None = None, **overrides) -> DatasetSpec:
    return population_spec(name=f"population_{fmt}", source={"format": fmt, "location": f"prisons/{fmt}/",
                                                             "pattern": PATTERN} | (source or {}), **overrides)


def rows_of(day: date, codes: list[str]) -> list[dict]:
    """A day's delivery; the second row has an empty population and a quoted delimiter."""
    return [{"snapshot_date": day, "establishment_code": code, "population": None if n == 1 else 100 * day.day + n,
             "category": "B,C" if n == 1 else "A"} for n, code in enumerate(codes)]


def encode(fmt: str, rows: list[dict]) -> bytes:
    if fmt == "csv":
        lines = ["snapshot_date,establishment_code,population,category"]
        lines += [f'{r["snapshot_date"]},{r["establishment_code"]},{"" if r["population"] is None else r["population"]},'
                  f'"{r["category"]}"' for r in rows]
        return ("\n".join(lines) + "\n").encode()
    if fmt == "jsonl":
        return b"".join(json.dumps(r, default=str).encode() + b"\n" for r in rows)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema([
        ("snapshot_date", pa.date32()), ("establishment_code", pa.string()), ("population", pa.int64()),
        ("category", pa.string())])), buf)
    return buf.getvalue()


def as_read(fmt: str, row: dict, ingest_date: date) -> tuple:
    """A delivered row as its raw table reads it: CSV all text, JSON dates as text, Parquet typed."""
    snapshot = row["snapshot_date"] if fmt == "parquet" else row["snapshot_date"].isoformat()
    population = row["population"]
    if fmt == "csv" and population is not None:
        population = str(population)
    return snapshot, row["establishment_code"], population, row["category"], ingest_date


@pytest.fixture
def landing_day(monkeypatch):
    """Land as if on a given UTC day (the raw key's ingest_date)."""
    def on(day: date) -> None:
        monkeypatch.setattr(ingest, "now_utc", lambda: datetime(day.year, day.month, day.day, 9, tzinfo=timezone.utc))
    return on


def deliver(lake, spec: DatasetSpec, name: str, body: bytes) -> None:
    lake.landing.write(f"{spec.source.location}{name}", body)


# --- local: DuckDB views ------------------------------------------------------------------
@pytest.mark.parametrize("fmt", FORMATS)
def test_local_view_reads_the_delivered_rows_for_every_landing_day(local_lake, landing_day, fmt):
    spec = spec_for(fmt)
    table = f"raw_prisons.population_{fmt}"
    day1 = rows_of(DAY1, ["AAA", "BBB", "CCC"])
    landing_day(DAY1)
    deliver(local_lake, spec, f"pop_{DAY1}.{fmt}", encode(fmt, day1))
    ingest.land(local_lake, spec)
    con = local_lake.connect()
    assert con.sql(f"SELECT count(*) FROM {table}").fetchone() == (3,)
    assert con.sql(f"SELECT * FROM {table} ORDER BY establishment_code").fetchall() == [
        as_read(fmt, r, DAY1) for r in day1]

    # The next day: a second file (gzipped where the format allows), and a zip that can't be read as a table.
    day2 = rows_of(DAY2, ["DDD", "EEE"])
    landing_day(DAY2)
    body = encode(fmt, day2)
    if fmt == "parquet":
        deliver(local_lake, spec, f"pop_{DAY2}.{fmt}", body)
    else:
        deliver(local_lake, spec, f"pop_{DAY2}.{fmt}.gz", gzip.compress(body))
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr(f"pop.{fmt}", encode(fmt, rows_of(DAY2, ["ZZZ"])))
    deliver(local_lake, spec, f"pop_{DAY2}_zipped.{fmt}.zip", archive.getvalue())
    report = ingest.land(local_lake, spec)
    assert len(report.accepted) == 2  # the zip is in raw too
    con = local_lake.connect()
    assert con.sql(f"SELECT ingest_date, count(*) FROM {table} GROUP BY 1 ORDER BY 1").fetchall() == [
        (DAY1, 3), (DAY2, 2)]
    assert con.sql(f"SELECT * FROM {table} ORDER BY ingest_date, establishment_code").fetchall() == (
        [as_read(fmt, r, DAY1) for r in day1] + [as_read(fmt, r, DAY2) for r in day2])
    # partition pruning by the hive column reads only that day's folder
    assert con.sql(f"SELECT establishment_code FROM {table} WHERE ingest_date = DATE '{DAY2}' ORDER BY 1").fetchall() == [
        ("DDD",), ("EEE",)]


def test_local_views_follow_the_spec_csv_options_and_column_types(local_lake, landing_day):
    landing_day(DAY1)
    csv_spec = spec_for("csv", source={"csv": {"delimiter": ";", "quote_char": "'", "encoding": "latin-1",
                                               "null_values": ["", "NA"]}})
    deliver(local_lake, csv_spec, f"pop_{DAY1}.csv",
            "snapshot_date;establishment_code;population;category\n2026-11-01;'A;A';NA;café\n"
            "2026-11-01;BBB\n2026-11-01;CCC;3;C;extra\n".encode("latin-1"))  # ragged rows, as Hive reads them
    json_spec = spec_for("jsonl")
    deliver(local_lake, json_spec, f"pop_{DAY1}.jsonl",
            b'{"snapshot_date":"2026-11-01","establishment_code":"AAA","population":"lots","category":"A","x":1}\n'
            b'{"establishment_code":"BBB","population":7}\n')
    ingest.land(local_lake, csv_spec)
    ingest.land(local_lake, json_spec)
    con = local_lake.connect()
    assert con.sql("SELECT * FROM raw_prisons.population_csv ORDER BY establishment_code").fetchall() == [
        ("2026-11-01", "A;A", None, "café", DAY1), ("2026-11-01", "BBB", None, None, DAY1),
        ("2026-11-01", "CCC", "3", "C", DAY1)]
    # JSON: by key, extra keys ignored, a missing key or a value of the wrong type is NULL (that value only)
    assert con.sql("SELECT * FROM raw_prisons.population_jsonl ORDER BY establishment_code").fetchall() == [
        ("2026-11-01", "AAA", None, "A", DAY1), (None, "BBB", 7, None, DAY1)]
    assert [(n, t) for n, t, *_ in con.sql("DESCRIBE raw_prisons.population_jsonl").fetchall()] == [
        ("snapshot_date", "VARCHAR"), ("establishment_code", "VARCHAR"), ("population", "BIGINT"),
        ("category", "VARCHAR"), ("ingest_date", "DATE")]


def test_cdc_parquet_has_the_dms_columns_and_files_missing_a_column_read_null(local_lake, landing_day):
    spec = DatasetSpec.model_validate({
        "name": "cases", "domain": "courts", "description": "DMS", "owner": "team:courts", "load_mode": "cdc",
        "source": {"location": "courts/cases/", "pattern": r"(LOAD\d+|\d{8}-\d{9})\.parquet", "format": "parquet"},
        "columns": [{"name": "case_id", "type": "string", "nullable": False}, {"name": "status", "type": "string"},
                    {"name": "court_code", "type": "string"}],
        "primary_key": ["case_id"]})
    landing_day(DAY1)
    for name, table in [("LOAD00000001.parquet", pa.table({"case_id": ["C1", "C2"], "status": ["open", "open"],
                                                           "extraction_timestamp": [datetime(2026, 11, 1, 8)] * 2})),
                        ("20261101-090000000.parquet", pa.table({"Op": ["U"], "case_id": ["C1"], "status": ["closed"],
                                                                 "extraction_timestamp": [datetime(2026, 11, 1, 9)]}))]:
        buf = io.BytesIO()
        pq.write_table(table, buf)
        local_lake.landing.write(f"courts/cases/{name}", buf.getvalue())
    ingest.land(local_lake, spec)
    rows = local_lake.connect().sql("SELECT op, case_id, status, court_code, extraction_timestamp FROM raw_courts.cases "
                                    "ORDER BY extraction_timestamp, case_id").fetchall()
    assert rows == [(None, "C1", "open", None, datetime(2026, 11, 1, 8)), (None, "C2", "open", None, datetime(2026, 11, 1, 8)),
                    ("U", "C1", "closed", None, datetime(2026, 11, 1, 9))]


def test_an_unreadable_raw_file_never_breaks_a_connection(local_lake, landing_day):
    spec = spec_for("parquet")
    landing_day(DAY1)
    deliver(local_lake, spec, f"pop_{DAY1}.parquet", encode("parquet", rows_of(DAY1, ["AAA"])))
    deliver(local_lake, spec, f"pop_{DAY1}_broken.parquet", b"PAR1 not really parquet")
    ingest.land(local_lake, spec)
    ingest.stage(local_lake, spec, DAY1)
    con = local_lake.connect()  # does not raise
    (broken,) = con.sql("SELECT raw_key FROM quarantine.files").fetchall()
    assert broken[0].endswith("_broken.parquet")
    # the file whose footer can't be read is left out of the view; the good file's rows are there
    assert con.sql("SELECT establishment_code FROM raw_prisons.population_parquet").fetchall() == [("AAA",)]

    # A definition edited by hand into SQL: no view over it, but one that says why
    path = raw_tables.registry(local_lake) / "prisons.population_parquet.json"
    document = json.loads(path.read_text())
    document["columns"][0]["name"] = document["columns"][0]["source"] = "x\" FROM (SELECT 1); --"
    path.write_text(json.dumps(document))
    con = local_lake.connect()
    with pytest.raises(Exception, match=r"raw_prisons\.population_parquet cannot be read: .*must match"):
        con.sql("SELECT * FROM raw_prisons.population_parquet").fetchall()


def test_register_all_rebuilds_the_views_of_an_existing_lake(local_lake, landing_day):
    specs = [spec_for(fmt) for fmt in FORMATS]
    for day in (DAY1, DAY2):
        landing_day(day)
        for spec in specs:
            deliver(local_lake, spec, f"pop_{day}.{spec.source.format}", encode(spec.source.format, rows_of(day, ["AAA"])))
            ingest.land(local_lake, spec)
    for path in raw_tables.registry(local_lake).glob("*.json"):
        path.unlink()  # a lake whose files landed before raw tables existed
    assert not local_lake.connect().sql("SELECT * FROM duckdb_views() WHERE schema_name = 'raw_prisons'").fetchall()
    assert raw_tables.register_all(local_lake, specs) == {s.key: 2 for s in specs}
    con = local_lake.connect()
    for spec in specs:
        assert con.sql(f"SELECT count(*) FROM raw_prisons.{spec.name}").fetchone() == (2,)


# --- aws: Glue Data Catalog on moto --------------------------------------------------------
EXPECTED_GLUE = {
    "csv": ("org.apache.hadoop.hive.serde2.OpenCSVSerde", "org.apache.hadoop.mapred.TextInputFormat",
            "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
            {"separatorChar": ",", "quoteChar": '"', "escapeChar": "\\"},
            ["string", "string", "string", "string"]),
    "jsonl": ("org.openx.data.jsonserde.JsonSerDe", "org.apache.hadoop.mapred.TextInputFormat",
              "org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat",
              {"ignore.malformed.json": "true", "case.insensitive": "true"},
              ["string", "string", "bigint", "string"]),
    "parquet": ("org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe",
                "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat",
                "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat", {},
                ["date", "string", "bigint", "string"]),
}


@pytest.fixture
def aws_lake(moto_endpoint):
    lake = make_aws_lake(moto_endpoint)
    yield lake
    drop_all_tables(lake)


def glue_calls(glue) -> list[str]:
    """Names of the Glue API calls made from now on."""
    calls: list[str] = []
    glue.meta.events.register("before-call.glue.*", lambda model, **_: calls.append(model.name))
    return calls


def partitions(glue, spec) -> dict[str, str]:
    found = glue.get_partitions(DatabaseName="raw_prisons", TableName=spec.name)["Partitions"]
    return {p["Values"][0]: p["StorageDescriptor"]["Location"] for p in found}


@pytest.mark.aws
def test_glue_tables_with_serde_location_columns_and_a_partition_per_landing_day(aws_lake, landing_day):
    lake, glue = aws_lake, raw_tables.glue_client(aws_lake)
    bucket = lake.settings.bucket
    specs = {fmt: spec_for(fmt) for fmt in FORMATS}
    calls = glue_calls(glue)
    for day in (DAY1, DAY2):
        landing_day(day)
        for fmt, spec in specs.items():
            deliver(lake, spec, f"pop_{day}.{fmt}", encode(fmt, rows_of(day, ["AAA", "BBB"])))
            deliver(lake, spec, f"pop_{day}_late.{fmt}", encode(fmt, rows_of(day, ["CCC"])))
            assert len(ingest.land(lake, spec).accepted) == 2
    # one partition call per (dataset, landing day), however many files; the table is looked up once
    assert calls.count("BatchCreatePartition") == 6
    assert calls.count("GetTable") == 3 and calls.count("CreateTable") == 3

    for fmt, spec in specs.items():
        table = glue.get_table(DatabaseName="raw_prisons", Name=spec.name)["Table"]
        serde, input_format, output_format, serde_params, types = EXPECTED_GLUE[fmt]
        sd = table["StorageDescriptor"]
        location = f"s3://{bucket}/raw/prisons/population_{fmt}/"
        assert table["TableType"] == "EXTERNAL_TABLE" and table["Parameters"]["EXTERNAL"] == "TRUE"
        assert sd["Location"] == location
        assert (sd["SerdeInfo"]["SerializationLibrary"], sd["InputFormat"], sd["OutputFormat"]) == (
            serde, input_format, output_format)
        assert sd["SerdeInfo"].get("Parameters", {}) == serde_params
        assert [(c["Name"], c["Type"]) for c in sd["Columns"]] == list(zip(
            ["snapshot_date", "establishment_code", "population", "category"], types))
        assert [(k["Name"], k["Type"]) for k in table["PartitionKeys"]] == [("ingest_date", "date")]
        assert table["Parameters"].get("skip.header.line.count") == ("1" if fmt == "csv" else None)
        assert partitions(glue, spec) == {str(d): f"{location}ingest_date={d}/" for d in (DAY1, DAY2)}
        # each partition's location holds exactly that day's delivered files, byte for byte
        for day in (DAY1, DAY2):
            listed = lake.raw.list(f"prisons/population_{fmt}/ingest_date={day}/")
            assert sorted(f.key.rsplit("/", 1)[1] for f in listed) == [f"pop_{day}.{fmt}", f"pop_{day}_late.{fmt}"]
            assert lake.raw.read_bytes(f"prisons/population_{fmt}/ingest_date={day}/pop_{day}.{fmt}") == encode(
                fmt, rows_of(day, ["AAA", "BBB"]))
    assert not [t for t in lake.tables() if t.namespace.startswith("raw_")]  # Iceberg listings skip Hive tables

    # Another file on a day that has its partition: fine, nothing new
    deliver(lake, specs["csv"], f"pop_{DAY2}_again.csv", encode("csv", rows_of(DAY2, ["DDD"])))
    ingest.land(lake, specs["csv"])
    assert set(partitions(glue, specs["csv"])) == {str(DAY1), str(DAY2)}


@pytest.mark.aws
def test_glue_table_follows_spec_changes_and_is_recreated_when_dropped(aws_lake, landing_day):
    lake, glue = aws_lake, raw_tables.glue_client(aws_lake)
    spec = spec_for("parquet")
    landing_day(DAY1)
    deliver(lake, spec, f"pop_{DAY1}.parquet", encode("parquet", rows_of(DAY1, ["AAA"])))
    ingest.land(lake, spec)
    # The spec gains a column: the table is updated, the new day's partition has it
    wider = spec_for("parquet", columns=[*spec.model_dump()["columns"], {"name": "wing", "type": "decimal(10,2)"}])
    landing_day(DAY2)
    deliver(lake, wider, f"pop_{DAY2}.parquet", encode("parquet", rows_of(DAY2, ["AAA"])))
    ingest.land(lake, wider)
    table = glue.get_table(DatabaseName="raw_prisons", Name=spec.name)["Table"]
    assert [(c["Name"], c["Type"]) for c in table["StorageDescriptor"]["Columns"]][-1] == ("wing", "decimal(10,2)")
    day2 = glue.get_partition(DatabaseName="raw_prisons", TableName=spec.name, PartitionValues=[str(DAY2)])
    assert day2["Partition"]["StorageDescriptor"]["Columns"][-1]["Name"] == "wing"

    # Dropped behind this process's back: the next landing recreates it, register_all restores every day
    glue.delete_table(DatabaseName="raw_prisons", Name=spec.name)
    landing_day(DAY3)
    deliver(lake, wider, f"pop_{DAY3}.parquet", encode("parquet", rows_of(DAY3, ["AAA"])))
    ingest.land(lake, wider)
    assert set(partitions(glue, spec)) == {str(DAY3)}
    assert raw_tables.register_all(lake, [wider]) == {wider.key: 3}
    assert set(partitions(glue, spec)) == {str(DAY1), str(DAY2), str(DAY3)}
