"""Database tables (PostgreSQL 15) and HTTP APIs (a local JSON API) as sources: extraction into
landing, then the usual raw → staged path, driven by the extract sensor as in production."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pyarrow.parquet as pq
import pytest
import yaml

from quayside import local_servers
from quayside.extract import ExtractError, last_extraction
from quayside.lake import Lake, LakeSettings
from quayside.specs import load_spec
from tests.conftest import DATASETS

DB_PASSWORD = "pg-secret-81c2e0"
API_TOKEN = "api-token-5d9b44"
T0 = datetime(2026, 11, 2, 9, 0, 0)


@pytest.fixture(scope="module")
def pg():
    """PostgreSQL 15 on 127.0.0.1 (password logins), yielding its URL without the password."""
    with local_servers.postgres(DB_PASSWORD) as url:
        yield url


def pg_connect(url: str) -> psycopg.Connection:
    return psycopg.connect(local_servers.libpq_url(url, DB_PASSWORD), autocommit=True)


def case_row(i: int, updated_at: datetime, status: str = "received") -> tuple:
    return (f"C{i:08d}", f"CC{i % 7:03d}", "theft", (T0 - timedelta(days=30 + i % 60)).date(), None, status, updated_at)


@pytest.fixture
def cases_table(pg) -> str:
    """A case-management table `casework.cases` with 1,200 cases; returns its schema-qualified name."""
    with pg_connect(pg) as con:
        con.execute("DROP SCHEMA IF EXISTS casework CASCADE")
        con.execute("CREATE SCHEMA casework")
        con.execute("CREATE TABLE casework.cases (case_id text PRIMARY KEY, court_code text, offence_type text, "
                    "received_date date, disposal_date date, status text, updated_at timestamp, internal_notes text)")
        with con.cursor() as cur:
            cur.executemany("INSERT INTO casework.cases VALUES (%s, %s, %s, %s, %s, %s, %s, 'not for the lake')",
                            [case_row(i, T0 + timedelta(seconds=i)) for i in range(1200)])
    return "casework.cases"


@pytest.fixture
def lake_env(tmp_path, monkeypatch) -> Lake:
    monkeypatch.setenv("QUAYSIDE_PROFILE", "local")
    monkeypatch.setenv("QUAYSIDE_HOME", str(tmp_path / "lake"))
    return Lake(LakeSettings(home=str(tmp_path / "lake")))


def project(tmp_path: Path, spec_file: str, source: dict, connection: dict, **spec_changes) -> tuple[Path, Path]:
    """The demo's datasets with one spec reading from connection `upstream`, and its connections file."""
    datasets = tmp_path / "datasets"
    shutil.copytree(DATASETS, datasets)
    path = datasets / spec_file
    spec = yaml.safe_load(path.read_text())
    spec["source"] = {"connection": "upstream"} | source
    spec.update(spec_changes)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    connections = tmp_path / "connections.yaml"
    connections.write_text(yaml.safe_dump({"upstream": connection}))
    return datasets, connections


def tick_and_run(datasets: Path, connections: Path, sensor_name: str, instance: dg.DagsterInstance):
    """One sensor tick; its run requests executed in process. Returns (tick, results)."""
    from lake_assets.definitions import build_definitions

    defs = build_definitions(datasets, connections)
    sensor = defs.get_sensor_def(sensor_name)
    resources = {k: defs.resources[k] for k in ("lake", "upstream")}
    tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, resources=resources, definitions=defs))
    results = []
    for request in tick.run_requests:
        job = defs.resolve_implicit_job_def_def_for_assets(list(request.asset_selection))
        results.append(job.execute_in_process(instance=instance, run_config=request.run_config,
                                              asset_selection=list(request.asset_selection), tags=request.tags))
    return tick, results


def scalar(lake: Lake, sql: str):
    """A fresh connection per query: views pin the table snapshot current when they were made."""
    return lake.connect().sql(sql).fetchone()[0]


def assert_secret_never_logged(instance: dg.DagsterInstance, results, secret: str) -> None:
    for result in results:
        assert secret not in str(instance.get_run_by_id(result.run_id).run_config)
        assert not any(secret in str(event) for event in instance.all_logs(result.run_id))


# --- relational databases ----------------------------------------------------------------------
def cases_project(tmp_path, pg, monkeypatch, page_rows=500):
    monkeypatch.setenv("UPSTREAM_DB_PASSWORD", DB_PASSWORD)
    return project(tmp_path, "courts/cases.yaml",
                   {"location": "courts/cases_db/", "table": {"table": "casework.cases", "watermark": "updated_at",
                                                              "page_rows": page_rows}},
                   {"type": "database", "url": pg, "password": "env:UPSTREAM_DB_PASSWORD"})


def test_database_table_full_load_then_incremental_through_the_sensor(tmp_path, monkeypatch, pg, cases_table,
                                                                         lake_env):
    datasets, connections = cases_project(tmp_path, pg, monkeypatch)
    instance = dg.DagsterInstance.ephemeral()
    tick, results = tick_and_run(datasets, connections, "courts__cases__extract", instance)
    assert len(results) == 1 and results[0].success
    assert scalar(lake_env, "SELECT count(*) FROM staged_courts.cases") == 1200
    first = last_extraction(lake_env, load_spec(datasets / "courts/cases.yaml"))
    assert first["full_load"] and first["rows"] == 1200 and first["pages"] == 1  # one COPY
    assert first["landing_key"].startswith("courts/cases_db/LOAD")
    assert first["watermark"] == [(T0 + timedelta(seconds=1199)).isoformat()]  # the max taken before reading

    tick, results = tick_and_run(datasets, connections, "courts__cases__extract", instance)
    assert not tick.run_requests  # nothing changed: the probe finds no newer rows

    with pg_connect(pg) as db:  # 10 cases move on, 5 arrive
        db.execute("UPDATE casework.cases SET status = 'listed', updated_at = %s WHERE case_id < 'C00000010'",
                   [T0 + timedelta(hours=2)])
        with db.cursor() as cur:
            cur.executemany("INSERT INTO casework.cases VALUES (%s, %s, %s, %s, %s, %s, %s, '')",
                            [case_row(i, T0 + timedelta(hours=3)) for i in range(5000, 5005)])
    tick, results = tick_and_run(datasets, connections, "courts__cases__extract", instance)
    assert len(results) == 1 and results[0].success
    second = last_extraction(lake_env, load_spec(datasets / "courts/cases.yaml"))
    assert not second["full_load"] and second["rows"] == 15 and second["landing_key"].endswith("-changes.parquet")
    assert scalar(lake_env, "SELECT count(*) FROM staged_courts.cases") == 1205
    assert scalar(lake_env, "SELECT count(*) FROM staged_courts.cases WHERE status = 'listed'") == 10
    # History keeps both versions of the changed cases (SCD type 2).
    assert scalar(lake_env, "SELECT count(*) FROM staged_courts.cases_history") == 1215
    assert "internal_notes" not in lake_env.connect().sql("SELECT * FROM staged_courts.cases LIMIT 0").columns  # spec columns only
    assert_secret_never_logged(instance, results, DB_PASSWORD)


def test_rows_sharing_one_watermark_value_are_read_exactly_once_across_pages(tmp_path, monkeypatch, pg,
                                                                              cases_table, lake_env):
    datasets, connections = cases_project(tmp_path, pg, monkeypatch, page_rows=300)
    spec = load_spec(datasets / "courts/cases.yaml")
    db = open_upstream(connections, monkeypatch)
    db.extract(lake_env, spec)
    with pg_connect(pg) as con:  # a bulk update stamps 1,000 rows with the same time
        con.execute("UPDATE casework.cases SET status = 'adjourned', updated_at = %s WHERE case_id < 'C00001000'",
                    [T0 + timedelta(days=1)])
    run = db.extract(lake_env, spec)
    assert (run.rows, run.pages) == (1000, 4)
    ids = pq.read_table(lake_env.landing.path(run.landing_key))["case_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 1000
    assert run.watermark == [T0 + timedelta(days=1), "C00000999"]  # (watermark, tie-breaker) of the last row
    assert db.extract(lake_env, spec).rows == 0


def open_upstream(connections: Path, monkeypatch):
    from quayside.connections import load_connections, open_connection, parse_connection

    settings = load_connections(connections)["upstream"]
    resolved = {k: (os.environ[v[4:]] if isinstance(v, str) and v.startswith("env:") else v)
                for k, v in settings.items()}
    return open_connection(parse_connection("upstream", resolved))


def test_a_connection_dropped_mid_incremental_read_costs_one_retried_page(tmp_path, monkeypatch, pg, cases_table,
                                                                          lake_env):
    import sqlalchemy as sa

    from quayside.database import Database

    datasets, connections = cases_project(tmp_path, pg, monkeypatch, page_rows=400)
    spec = load_spec(datasets / "courts/cases.yaml")
    db, pages = Database(pg, DB_PASSWORD), []
    db.extract(lake_env, spec)  # the full load: one COPY
    with pg_connect(pg) as con:
        con.execute("UPDATE casework.cases SET updated_at = updated_at + interval '1 day'")

    @sa.event.listens_for(db.engine, "before_cursor_execute")
    def server_drops_us(conn, cursor, statement, parameters, context, executemany):
        if "ORDER BY" not in statement:
            return  # the driver's own set-up queries
        pages.append(statement)
        if len(pages) == 2:  # the second page's connection dies just before its query runs
            with pg_connect(pg) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", [conn.connection.dbapi_connection.info.backend_pid])

    run = db.extract(lake_env, spec)
    # 3 pages and the empty one that ends the read: 4 queries, the second asked twice
    assert (run.full_load, run.rows, run.pages, len(pages)) == (False, 1200, 3, 5)
    ids = pq.read_table(lake_env.landing.path(run.landing_key))["case_id"].to_pylist()
    assert len(ids) == len(set(ids)) == 1200


TYPED_SPEC = {
    "name": "typed", "domain": "courts", "owner": "team:courts-data", "description": "Every spec type from a table.",
    "load_mode": "cdc", "primary_key": ["id"],
    "source": {"connection": "upstream", "location": "courts/typed/", "table": {"table": "public.typed",
                                                                                 "watermark": "changed_at"}},
    "columns": [{"name": "id", "type": "int"}, {"name": "ratio", "type": "float"},
                {"name": "amount", "type": "decimal(18,4)"}, {"name": "day", "type": "date"},
                {"name": "at", "type": "timestamp"}, {"name": "changed_at", "type": "timestamptz"},
                {"name": "order", "type": "string"}, {"name": "flag", "type": "bool"}],  # `order`: must be quoted
}


def test_copy_full_load_round_trips_typed_values_exactly_as_the_paged_read(tmp_path, pg, lake_env):
    from decimal import Decimal

    from quayside.database import Database
    from quayside.specs import DatasetSpec

    text = 'a,b "quoted"\nsecond line; é 漢 🙂\r\t'
    with pg_connect(pg) as con:
        con.execute("SET TimeZone = 'Europe/London'")  # the session's zone must not leak into timestamptz values
        con.execute("DROP TABLE IF EXISTS public.typed")
        con.execute('CREATE TABLE public.typed (id bigint PRIMARY KEY, ratio float8, amount numeric(18,4), day date, '
                    'at timestamp, changed_at timestamptz, "order" text, flag boolean)')
        with con.cursor() as cur:
            cur.executemany("INSERT INTO public.typed VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", [
                (-2**63, 0.1, Decimal("-12345678901234.5678"), datetime(1, 1, 1).date(), datetime(2026, 11, 2, 9, 0, 0, 123456),
                 datetime.fromisoformat("2026-07-01T12:00:00.5+02:00"), text, True),
                (2**63 - 1, float("inf"), Decimal("0.0001"), datetime(9999, 12, 31).date(), datetime(1970, 1, 1),
                 datetime.fromisoformat("1969-12-31T23:59:59.999999+00:00"), "", False),
                (0, 1.0000000000000002, None, None, None, None, "NULL", None),
                (1, None, Decimal(0), datetime(2026, 1, 1).date(), None, None, None, None)])
    spec = DatasetSpec.model_validate(TYPED_SPEC)
    db = Database(pg, DB_PASSWORD)
    copied = db.extract(lake_env, spec)
    db.copies = False
    paged = db.extract(lake_env, spec, full_load=True)
    assert copied.pages == 1 and paged.pages == 1 and copied.rows == paged.rows == 4
    assert copied.watermark == [datetime.fromisoformat("2026-07-01T10:00:00.5+00:00")]
    from_copy = pq.read_table(lake_env.landing.path(copied.landing_key))
    from_pages = pq.read_table(lake_env.landing.path(paged.landing_key))
    assert from_copy.schema == from_pages.schema
    # Equal but for the change timestamp of rows without a watermark: each extraction's own start.
    unstamped = ["extraction_timestamp"]
    assert from_copy.drop_columns(unstamped).sort_by("id").equals(from_pages.drop_columns(unstamped).sort_by("id"))
    rows = {r["id"]: r for r in from_copy.to_pylist()}
    assert rows[-2**63]["order"] == text and rows[2**63 - 1]["order"] == "" and rows[0]["order"] == "NULL"
    assert rows[1]["order"] is None and rows[1]["ratio"] is None and rows[0]["amount"] is None
    assert rows[-2**63]["amount"] == Decimal("-12345678901234.5678") and rows[0]["ratio"] == 1.0000000000000002
    assert str(rows[-2**63]["changed_at"]) == "2026-07-01 10:00:00.500000+00:00"
    assert rows[-2**63]["extraction_timestamp"] == datetime(2026, 7, 1, 10, 0, 0, 500000)  # the row's watermark, UTC


@pytest.mark.parametrize("watermark", ["updated_at", None])  # dies in the watermark's max(), or in the read
def test_a_copy_that_dies_mid_read_names_dataset_and_table_and_writes_nothing(tmp_path, monkeypatch, pg,
                                                                              cases_table, lake_env, watermark):
    from quayside.database import Database

    with pg_connect(pg) as con:  # a source whose backend is killed after 1,000 rows have been sent
        con.execute("DROP VIEW IF EXISTS casework.cases_dying")
        con.execute("CREATE VIEW casework.cases_dying AS SELECT * FROM (SELECT c.*, row_number() OVER () AS n "
                    "FROM casework.cases c) s WHERE n <= 1000 OR pg_terminate_backend(pg_backend_pid())")
    datasets, _ = cases_project(tmp_path, pg, monkeypatch)
    spec = load_spec(datasets / "courts/cases.yaml")
    spec = spec.model_copy(update={"source": spec.source.model_copy(update={
        "table": spec.source.table.model_copy(update={"table": "casework.cases_dying", "watermark": watermark})})})
    with pytest.raises(ExtractError, match=r"courts\.cases: reading casework\.cases_dying failed after 2 "
                                           r"attempt\(s\): terminating connection due to administrator command"):
        Database(pg, DB_PASSWORD, retries=1).extract(lake_env, spec)
    assert not list(lake_env.landing.list()) and last_extraction(lake_env, spec) is None


def test_bad_database_password_is_a_clear_error_and_writes_nothing(tmp_path, monkeypatch, pg, cases_table, lake_env):
    from quayside.database import Database

    datasets, _ = cases_project(tmp_path, pg, monkeypatch)
    spec = load_spec(datasets / "courts/cases.yaml")
    with pytest.raises(ExtractError, match=r"courts\.cases: reading casework\.cases failed .*password authentication "
                                           r"failed for user \"quayside\"") as err:
        Database(pg, "wrong-password", retries=0).extract(lake_env, spec)
    assert "wrong-password" not in str(err.value)
    assert not list(lake_env.landing.list()) and last_extraction(lake_env, spec) is None


def test_unreachable_database_is_retried_then_a_clear_error(tmp_path, monkeypatch, pg, lake_env):
    from quayside.database import Database

    datasets, _ = cases_project(tmp_path, pg, monkeypatch)
    spec = load_spec(datasets / "courts/cases.yaml")
    closed = f"postgresql+psycopg://quayside@127.0.0.1:{local_servers.free_port()}/postgres?connect_timeout=2"
    with pytest.raises(ExtractError, match=r"failed after 3 attempt\(s\): .*Connection refused"):
        Database(closed, DB_PASSWORD).extract(lake_env, spec)
    assert not list(lake_env.landing.list())


def test_values_that_do_not_fit_the_spec_name_dataset_table_and_column(tmp_path, monkeypatch, pg, lake_env):
    from quayside.database import Database

    with pg_connect(pg) as con:
        con.execute("DROP TABLE IF EXISTS public.payments")
        con.execute("CREATE TABLE public.payments (payment_id text, payment_date date, provider_id text, "
                    "category text, amount text, case_reference text)")
        con.execute("INSERT INTO public.payments VALUES ('P1', '2026-11-01', 'LA001', 'crime_lower', 'lots', 'C1')")
    datasets, _ = project(tmp_path, "legal_aid/payments.yaml",
                          {"location": "legal_aid/payments_db/", "table": {"table": "payments"}},
                          {"type": "database", "url": pg}, partitioning=None)
    spec = load_spec(datasets / "legal_aid/payments.yaml")
    with pytest.raises(ExtractError, match=r"legal_aid\.payments: payments\.amount: values do not fit the spec's "
                                           r"type 'decimal\(12,2\)'"):
        Database(pg, DB_PASSWORD).extract(lake_env, spec)
    assert not list(lake_env.landing.list())


# --- HTTP API pull -----------------------------------------------------------------------------------
REFERRALS_SPEC = {
    "name": "referrals", "domain": "legal_aid", "owner": "team:legal-aid-data",
    "description": "Legal-aid referrals from the referral service's API, pulled incrementally.",
    "load_mode": "cdc", "primary_key": ["referral_id"],
    "columns": [
        {"name": "referral_id", "type": "int", "nullable": False},
        {"name": "status", "type": "string", "nullable": False, "enum": ["open", "accepted", "closed"]},
        {"name": "updated_at", "type": "timestamptz", "nullable": False},
    ],
}


def referral(i: int, minute: int, status: str = "open") -> dict:
    return {"referral_id": i, "status": status, "updated_at": f"2026-11-02T10:{minute:02d}:00+00:00"}


def referrals_project(tmp_path, api, monkeypatch, **api_settings):
    monkeypatch.setenv("UPSTREAM_API_TOKEN", API_TOKEN)
    datasets = tmp_path / "datasets"
    shutil.copytree(DATASETS, datasets)
    spec = REFERRALS_SPEC | {"source": {
        "connection": "upstream", "location": "legal_aid/referrals/",
        "api": {"path": "v1/referrals", "records": "data", "pagination": "link",
                "incremental_param": "updated_since", "incremental_field": "updated_at"} | api_settings}}
    (datasets / "legal_aid/referrals.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    connections = tmp_path / "connections.yaml"
    connections.write_text(yaml.safe_dump({"upstream": {"type": "http_api", "base_url": api.url,
                                                        "token": "env:UPSTREAM_API_TOKEN", "max_retries": 3}}))
    return datasets, connections


@pytest.fixture
def api():
    with local_servers.json_api({"v1/referrals": [referral(i, i % 50) for i in range(250)]}, API_TOKEN,
                                page_size=100) as server:
        yield server


def test_api_pull_follows_links_then_pulls_only_what_changed(tmp_path, monkeypatch, api, lake_env):
    datasets, connections = referrals_project(tmp_path, api, monkeypatch)
    instance = dg.DagsterInstance.ephemeral()
    tick, results = tick_and_run(datasets, connections, "legal_aid__referrals__extract", instance)
    assert len(results) == 1 and results[0].success
    assert scalar(lake_env, "SELECT count(*) FROM staged_legal_aid.referrals") == 250
    assert [p.split("?")[0] for p in api.requests[-3:]] == ["/v1/referrals"] * 3  # 3 pages by Link header

    tick, results = tick_and_run(datasets, connections, "legal_aid__referrals__extract", instance)
    assert not tick.run_requests and "updated_since=2026-11-02T10%3A49%3A00%2B00%3A00" in api.requests[-1]

    api.records["v1/referrals"][:5] = [referral(i, 55, "accepted") for i in range(5)]
    api.records["v1/referrals"].append(referral(900, 56))
    tick, results = tick_and_run(datasets, connections, "legal_aid__referrals__extract", instance)
    assert len(results) == 1 and results[0].success
    assert scalar(lake_env, "SELECT count(*) FROM staged_legal_aid.referrals") == 251
    assert scalar(lake_env, "SELECT count(*) FROM staged_legal_aid.referrals WHERE status = 'accepted'") == 5
    assert last_extraction(lake_env, load_spec(datasets / "legal_aid/referrals.yaml"))["rows"] == 6
    assert_secret_never_logged(instance, results, API_TOKEN)


@pytest.mark.parametrize("pagination", [{"pagination": "cursor", "cursor_param": "cursor"},
                                        {"pagination": "page", "page_param": "page", "page_size_param": "per_page",
                                         "page_size": 40}])
def test_api_cursor_and_page_number_pagination(tmp_path, monkeypatch, api, lake_env, pagination):
    datasets, connections = referrals_project(tmp_path, api, monkeypatch, **pagination)
    run = open_upstream(connections, monkeypatch).extract(lake_env, load_spec(datasets / "legal_aid/referrals.yaml"))
    assert run.rows == 250 and run.pages == (3 if pagination["pagination"] == "cursor" else 7)


def test_api_retries_429_after_retry_after_5xx_and_timeouts(tmp_path, monkeypatch, api, lake_env):
    import time

    datasets, connections = referrals_project(tmp_path, api, monkeypatch)
    spec = load_spec(datasets / "legal_aid/referrals.yaml")
    client = open_upstream(connections, monkeypatch)
    client.timeout, client.backoff = 0.5, 0.05
    api.faults = [(429, {"Retry-After": "1"}), ("sleep", 1.0), (502,)]  # max_retries 3: a 4th attempt succeeds
    started = time.monotonic()
    run = client.extract(lake_env, spec)
    assert run.rows == 250 and time.monotonic() - started >= 1.0  # waited as Retry-After said
    assert len(api.requests) == 3 + 3

    api.faults = [(503,)] * 10
    with pytest.raises(ExtractError, match=r"legal_aid\.referrals: GET /v1/referrals: failed after 4 attempts, "
                                           r"last: HTTP 503"):
        client.extract(lake_env, spec, full_load=True)
    assert last_extraction(lake_env, spec)["rows"] == 250  # the failed pull recorded nothing


def test_api_refused_credentials_and_foreign_next_links(tmp_path, monkeypatch, api, lake_env):
    datasets, connections = referrals_project(tmp_path, api, monkeypatch)
    spec = load_spec(datasets / "legal_aid/referrals.yaml")
    monkeypatch.setenv("UPSTREAM_API_TOKEN", "stolen-or-expired")
    with pytest.raises(ExtractError, match=r"credentials refused \(HTTP 401\)") as err:
        open_upstream(connections, monkeypatch).extract(lake_env, spec)
    assert "stolen-or-expired" not in str(err.value)
    monkeypatch.setenv("UPSTREAM_API_TOKEN", API_TOKEN)
    api.faults = [(200, {"Link": '<http://attacker.example/collect>; rel="next"'})]
    with pytest.raises(ExtractError, match="next-page link leaves 127.0.0.1:.* refused"):
        open_upstream(connections, monkeypatch).extract(lake_env, spec)
    assert not list(lake_env.landing.list())


def test_spec_refuses_a_source_that_does_not_fit_its_connection(tmp_path, monkeypatch, pg):
    from lake_assets.definitions import build_definitions

    datasets, connections = project(tmp_path, "legal_aid/payments.yaml",
                                    {"location": "legal_aid/payments/", "pattern": r".*\.csv", "format": "csv"},
                                    {"type": "database", "url": pg})
    with pytest.raises(ValueError, match="legal_aid.payments: connection 'upstream' is a database: the source "
                                         "needs a 'table' block"):
        build_definitions(datasets, connections)
