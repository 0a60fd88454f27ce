"""Scenario 2: a PostgreSQL table → staged Iceberg (full load).

The table: 5M rows of bigint id, int, numeric(12,2), float8, text, date, timestamp, boolean,
generated server-side. Quayside: `Database.extract` (one COPY), then `land` and `stage` of a
snapshot dataset, as a real run does. Peer: dlt `sql_table` → filesystem destination with
`table_format="iceberg"`, with its connectorx backend (its fastest) and its pyarrow backend.
Limit: `COPY … TO STDOUT (FORMAT binary)` read fully with psycopg, the bytes discarded.

Every contender is watched from a second connection: the longest transaction it held open on the
server (pg_stat_activity's xact_start), polled every 50 ms.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

from benchmarks.harness import Row, compare
from quayside.local_servers import libpq_url

PASSWORD = "bench-pg-7f3a"
TABLE = "bench_rows"
SPEC = {
    "name": "rows", "domain": "bench", "description": "benchmark table", "owner": "team:bench",
    "load_mode": "snapshot", "primary_key": ["id"],
    "source": {"connection": "upstream", "location": "bench/rows/", "table": {"table": f"public.{TABLE}"}},
    "columns": [{"name": "id", "type": "int", "nullable": False}, {"name": "quantity", "type": "int"},
                {"name": "amount", "type": "decimal(12,2)"}, {"name": "score", "type": "float"},
                {"name": "label", "type": "string"}, {"name": "day", "type": "date"},
                {"name": "created_at", "type": "timestamp"}, {"name": "active", "type": "bool"}],
}


def create_table(url: str, rows: int) -> None:
    import psycopg

    with psycopg.connect(libpq_url(url, PASSWORD), autocommit=True) as con:
        con.execute(f"DROP TABLE IF EXISTS {TABLE}")
        con.execute(f"""CREATE TABLE {TABLE} AS SELECT i::bigint AS id, (i % 1000)::int AS quantity,
            round((i % 100000) / 7.0, 2)::numeric(12,2) AS amount, (i * 0.37)::float8 AS score,
            'label ' || (i % 5000) || CASE WHEN i % 10 = 0 THEN ', with "quotes"' ELSE '' END AS label,
            DATE '2020-01-01' + i % 2000 AS day, TIMESTAMP '2020-01-01' + i * INTERVAL '1 second' AS created_at,
            CASE WHEN i % 7 = 0 THEN NULL ELSE i % 3 = 0 END AS active
            FROM generate_series(1, {rows}) AS i""")
        con.execute(f"ALTER TABLE {TABLE} ADD PRIMARY KEY (id)")
        con.execute(f"VACUUM ANALYZE {TABLE}")


class TransactionWatch:
    """The longest transaction any other session holds open while inside the block, in seconds."""

    def __init__(self, url: str):
        self.url, self.longest, self.done = url, 0.0, threading.Event()

    def __enter__(self) -> TransactionWatch:
        import psycopg

        con = psycopg.connect(libpq_url(self.url, PASSWORD), autocommit=True)

        def poll() -> None:
            with con:
                while not self.done.wait(0.05):
                    (age,) = con.execute(
                        "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0)::float8 "
                        "FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND backend_type = 'client backend'"
                    ).fetchone()
                    self.longest = max(self.longest, age)

        self.thread = threading.Thread(target=poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()


def quayside(clock, url: str, home: str) -> dict:
    from quayside.database import Database
    from quayside.ingest import land, stage
    from quayside.lake import Lake, LakeSettings
    from quayside.specs import DatasetSpec

    spec = DatasetSpec.model_validate(SPEC)
    lake = Lake(LakeSettings(home=home))
    database = Database(url, PASSWORD)
    clock.start()
    with TransactionWatch(url) as watch:
        extraction = database.extract(lake, spec, full_load=True)
        land(lake, spec, keys=[extraction.landing_key])
        report = stage(lake, spec)
    return {"rows": report.rows_staged, "extract_seconds": extraction.seconds,
            "transaction_seconds": extraction.longest_transaction_seconds, "server_transaction_seconds": watch.longest}


def dlt_pipeline(clock, url: str, home: str, backend: str) -> dict:
    os.environ["RUNTIME__DLTHUB_TELEMETRY"] = "false"
    import dlt
    from dlt.sources.sql_database import sql_table

    rows = sql_table(credentials=url.replace("@", f":{PASSWORD}@", 1), table=TABLE, schema="public", backend=backend)
    pipeline = dlt.pipeline(pipeline_name="bench", pipelines_dir=f"{home}/pipelines", dataset_name="bench",
                            destination=dlt.destinations.filesystem(bucket_url=f"file://{home}/out"))
    clock.start()
    with TransactionWatch(url) as watch:
        pipeline.run(rows, table_format="iceberg", loader_file_format="parquet")
    return {"rows": pipeline.last_trace.last_normalize_info.row_counts.get(TABLE, 0),
            "server_transaction_seconds": watch.longest}


def limit(clock, url: str) -> dict:
    import psycopg

    with psycopg.connect(libpq_url(url, PASSWORD)) as con:
        clock.start()
        with TransactionWatch(url) as watch, con.cursor() as cursor:
            with cursor.copy(f"COPY (SELECT * FROM {TABLE}) TO STDOUT (FORMAT binary)") as copy:
                for _ in copy:
                    pass
            rows = cursor.rowcount
            con.commit()
    return {"rows": rows, "server_transaction_seconds": watch.longest}


def run(data: Path, work: Path, quick: bool, repetitions: int) -> dict:
    from quayside import local_servers

    rows = 20_000 if quick else 5_000_000
    homes = {name: str(work / "s2" / name) for name in ("quayside", "dlt_connectorx", "dlt_pyarrow")}

    def reset(name: str) -> None:
        if name in homes:
            shutil.rmtree(homes[name], ignore_errors=True)

    here = "benchmarks.scenarios.postgres_extract"
    with local_servers.postgres(PASSWORD) as url:
        started = time.perf_counter()
        create_table(url, rows)
        print(f"    table of {rows:,} rows made in {time.perf_counter() - started:.0f} s", flush=True)
        figures = compare({
            "quayside": (f"{here}:quayside", {"url": url, "home": homes["quayside"]}),
            "dlt_connectorx": (f"{here}:dlt_pipeline", {"url": url, "home": homes["dlt_connectorx"],
                                                        "backend": "connectorx"}),
            "dlt_pyarrow": (f"{here}:dlt_pipeline", {"url": url, "home": homes["dlt_pyarrow"], "backend": "pyarrow"}),
            "limit": (f"{here}:limit", {"url": url}),
        }, repetitions, before_each=reset, once=frozenset({"dlt_pyarrow"}))
    for name in homes:
        reset(name)
    return {"rows": rows, "figures": figures}


def report(result: dict, plots: Path) -> list:
    f, rows = result["figures"], result["rows"]
    speed = {name: rows / fig.seconds for name, fig in f.items()}
    fastest_dlt = max(("dlt_connectorx", "dlt_pyarrow"), key=speed.get)
    vs_limit, vs_dlt = speed["quayside"] / speed["limit"], speed["quayside"] / speed[fastest_dlt]
    q = f["quayside"]
    held = q.extra["server_transaction_seconds"] / q.extra["extract_seconds"]

    def figures(name: str) -> str:
        return (f"{speed[name]:,.0f} rows/s ({f[name].seconds:.1f} s), {f[name].peak_rss_mb:,.0f} MB RSS, "
                f"transaction {f[name].extra['server_transaction_seconds']:.1f} s")

    return [Row(
        "2", f"PostgreSQL table, {rows:,} rows × 8 columns → staged Iceberg (full load)",
        figures("quayside"),
        f"dlt connectorx {figures('dlt_connectorx')}; dlt pyarrow {figures('dlt_pyarrow')}",
        figures("limit"),
        f"{vs_limit:.2f}× limit, {vs_dlt:.2f}× dlt ({fastest_dlt}), transaction {held:.2f}× extraction",
        "≥ 0.7× limit, ≥ 1.4× dlt, RSS < 1 GB, transaction ≤ 1.2× extraction",
        vs_limit >= 0.7 and vs_dlt >= 1.4 and q.peak_rss_mb < 1024 and held <= 1.2,
        f"Quayside: extraction (COPY to Parquet in landing) {q.extra['extract_seconds']:.1f} s, of which the "
        f"source transaction {q.extra['transaction_seconds']:.1f} s as the client timed it; the rest is the raw "
        "copy (sha256-verified) and staging with validation",
    )]
