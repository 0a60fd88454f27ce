"""The demo tenant delivered through every kind of source, against real servers on 127.0.0.1
(what `make run-sources` calls).

Starts moto (S3), Azurite (Azure Blob), OpenSSH's sshd (SFTP), PostgreSQL 15, a JSON API and the
push endpoint; puts each demo dataset where its channel holds it; writes a copy of the demo
specs that read from those connections, plus its connections file, under
`$QUAYSIDE_HOME/sources/`; then, as in production, each dataset's sensor finds what is new and
the runs it asks for are executed (a dataset's daily batches as one range run). The curated
layer follows and the summary is the one `make run` prints.
"""

import argparse
import contextlib
import hashlib
import os
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path

import boto3
import dagster as dg
import duckdb
import requests
import yaml
from pyiceberg.expressions import AlwaysTrue, EqualTo

from lake_assets.definitions import CONNECTIONS, DATASETS, build_definitions
from lake_assets.run import RANGE_END, RANGE_START, Runner, curated_runs
from quayside import local_servers, push
from quayside.demo import generate
from quayside.ingest import read_system
from quayside.lake import Lake, LakeSettings
from quayside.specs import DatasetSpec, load_specs
from sensors.landing import raw_op_name

# How each demo dataset arrives here; the connection's name is what its spec's source names.
CHANNELS = {
    "courts.cases": ("database", "casework_db"),
    "courts.hearings": ("http_api", "listings_api"),
    "courts.defendants": ("push", "landing"),
    "courts.court_register": ("fileshare", "courts_share"),
    "prisons.population": ("sftp", "population_sftp"),
    "legal_aid.payments": ("s3", "laa_exports"),
    "monitoring.em_events": ("azure_blob", "em_supplier"),
}
SECRETS = {name: hashlib.sha256(f"quayside-demo-{name}-{os.getpid()}".encode()).hexdigest()[:24]
           for name in ("db", "api", "push", "s3")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ingest the demo tenant through every source connector")
    parser.add_argument("--end", type=date.fromisoformat, default=date.today() - timedelta(days=1))
    parser.add_argument("--days", type=int, default=28)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    home = Path(LakeSettings.from_env().home)
    work = home / "sources"
    shutil.rmtree(work, ignore_errors=True)
    with tempfile.TemporaryDirectory() as scratch_home:
        scratch = Lake(LakeSettings(home=scratch_home))
        generate(scratch, end=args.end, days=args.days)
        with contextlib.ExitStack() as servers:
            connections = start_and_seed(servers, scratch, load_specs(DATASETS), work)
            datasets = write_project(work, connections)
            print(f"servers up and seeded in {time.perf_counter() - started:.1f}s; ingesting through sensors",
                  flush=True)
            lake, specs, defs = Lake(), load_specs(datasets), build_definitions(datasets, work / "connections.yaml")
            runner = Runner(defs, "make-run-sources")
            days = ingest_through_sensors(runner, defs, specs)
            for label, keys, tags in curated_runs(defs, days):
                runner.run(label, keys, tags)
    print_sources(lake, specs)
    return runner.finish(lake, specs, started)


def start_and_seed(servers: contextlib.ExitStack, scratch: Lake, specs: list[DatasetSpec], work: Path) -> dict:
    """Start every server, put each dataset's demo files (or rows) there; returns connections.yaml."""
    # Everything under a dataset's location travels its channel, stray files included (the
    # supplier's readme sits in their drop); what lies elsewhere stays in landing, as in `make run`.
    files = {s.key: [f.key for f in scratch.landing.list(s.source.location)] for s in specs}
    by_key = {s.key: s for s in specs}
    lake = Lake()
    for f in scratch.landing.list():
        if not any(f.key in keys for keys in files.values()):
            lake.landing.write(f.key, scratch.landing.read_bytes(f.key))
    connections: dict[str, dict] = {}

    endpoint = servers.enter_context(local_servers.moto())
    os.environ.update(LAA_EXPORTS_ENDPOINT=endpoint, LAA_EXPORTS_SECRET=SECRETS["s3"])
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-2", aws_access_key_id="laa-reader",
                      aws_secret_access_key=SECRETS["s3"])
    s3.create_bucket(Bucket="laa-exports", CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    for key in files["legal_aid.payments"]:
        s3.put_object(Bucket="laa-exports", Key=f"exports/{key}", Body=scratch.landing.read_bytes(key))
    connections["laa_exports"] = {"type": "s3", "bucket": "laa-exports", "prefix": "exports",
                                  "endpoint_url": "env:LAA_EXPORTS_ENDPOINT", "access_key_id": "laa-reader",
                                  "secret_access_key": "env:LAA_EXPORTS_SECRET"}

    os.environ["EM_SUPPLIER_AZURE"] = servers.enter_context(local_servers.azurite())
    from azure.storage.blob import ContainerClient

    container = ContainerClient.from_connection_string(os.environ["EM_SUPPLIER_AZURE"], "em-supplier")
    container.create_container()
    for key in files["monitoring.em_events"]:
        container.upload_blob(f"outbound/{key}", scratch.landing.read_bytes(key))
    connections["em_supplier"] = {"type": "azure_blob", "container": "em-supplier", "prefix": "outbound",
                                  "connection_string": "env:EM_SUPPLIER_AZURE"}

    sftp, data = servers.enter_context(local_servers.sshd(work / "sftp"))
    share = work / "share"
    for keys, root in ((files["prisons.population"], data), (files["courts.court_register"], share)):
        for key in keys:
            (root / key).parent.mkdir(parents=True, exist_ok=True)
            (root / key).write_bytes(scratch.landing.read_bytes(key))
    connections["population_sftp"] = sftp
    connections["courts_share"] = {"type": "fileshare", "root": str(share)}

    url = servers.enter_context(local_servers.postgres(SECRETS["db"]))
    os.environ["CASEWORK_DB_PASSWORD"] = SECRETS["db"]
    seed_table(url, by_key["courts.cases"], current_state(scratch, by_key["courts.cases"], files["courts.cases"]))
    connections["casework_db"] = {"type": "database", "url": url, "password": "env:CASEWORK_DB_PASSWORD"}

    hearings = current_state(scratch, by_key["courts.hearings"], files["courts.hearings"])
    api = servers.enter_context(local_servers.json_api({"v1/hearings": [
        {k: v.isoformat() if isinstance(v, (date, datetime)) else v for k, v in row.items()} for row in hearings]},
        SECRETS["api"], page_size=500))
    os.environ["LISTINGS_API_TOKEN"] = SECRETS["api"]
    connections["listings_api"] = {"type": "http_api", "base_url": api.url, "token": "env:LISTINGS_API_TOKEN"}

    push_files(servers, lake, specs, scratch, by_key["courts.defendants"], files["courts.defendants"])
    return connections


def current_state(scratch: Lake, spec: DatasetSpec, keys: list[str]) -> list[dict]:
    """A DMS dataset's rows as its source database holds them now: the last version of each key."""
    paths = [scratch.landing.path(k) for k in keys if spec.source.matches(Path(k).name)]
    pk = ", ".join(f'"{c}"' for c in spec.primary_key)
    columns = ", ".join(f'"{c.name}"' for c in spec.columns)
    cdc = spec.cdc
    sequence = f'"{cdc.sequence_column}" DESC NULLS LAST' if cdc.sequence_column else "1"
    query = (f"SELECT {columns} FROM (SELECT *, coalesce(\"{cdc.op_column}\", 'I') AS _op FROM "
             f"read_parquet(?, union_by_name = true) QUALIFY row_number() OVER (PARTITION BY {pk} "
             f"ORDER BY \"{cdc.timestamp_column}\" DESC, {sequence}) = 1) WHERE _op <> 'D'")
    with duckdb.connect() as con:
        return con.execute(query, [paths]).fetch_arrow_table().to_pylist()


def seed_table(url: str, spec: DatasetSpec, rows: list[dict]) -> None:
    import psycopg

    sql_types = {"string": "text", "int": "bigint", "float": "double precision", "bool": "boolean", "date": "date",
                 "timestamp": "timestamp", "timestamptz": "timestamptz"}
    columns = [c.name for c in spec.columns]
    with psycopg.connect(local_servers.libpq_url(url, SECRETS["db"]), autocommit=True) as con:
        con.execute("CREATE SCHEMA casework")
        con.execute(f"CREATE TABLE casework.{spec.name} ("
                    + ", ".join(f"{c.name} {sql_types.get(c.type, 'numeric')}" for c in spec.columns)
                    + f", PRIMARY KEY ({', '.join(spec.primary_key)}))")
        with con.cursor().copy(f"COPY casework.{spec.name} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row([row[c] for c in columns])


def push_files(servers: contextlib.ExitStack, lake: Lake, specs: list[DatasetSpec], scratch: Lake,
               spec: DatasetSpec, keys: list[str]) -> None:
    """Deliver a dataset's files as its supplier would through the API Gateway path: signed PUTs."""
    os.environ[push.secret_env_name(spec)] = SECRETS["push"]
    server = push.make_server(lake, specs, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    servers.callback(server.shutdown)
    for key in (k for k in keys if spec.source.matches(Path(k).name)):  # the endpoint takes only the dataset's files
        body = scratch.landing.read_bytes(key)
        path = f"/datasets/{spec.domain}/{spec.name}/files/{Path(key).name}"
        stamp = str(int(time.time()))
        response = requests.put(f"http://127.0.0.1:{server.server_port}{path}", data=body, timeout=30, headers={
            "X-Quayside-Timestamp": stamp,
            "X-Quayside-Signature": push.signature(SECRETS["push"], stamp, path, hashlib.sha256(body).hexdigest())})
        response.raise_for_status()


def write_project(work: Path, connections: dict) -> Path:
    """The demo specs, each reading from its channel's connection, and the connections file."""
    datasets = work / "datasets"
    shutil.copytree(DATASETS, datasets)
    for path in datasets.glob("*/*.yaml"):
        spec = yaml.safe_load(path.read_text())
        kind, connection = CHANNELS[f"{spec['domain']}.{spec['name']}"]
        source = spec["source"]
        if kind == "database":
            source = {"location": "courts/cases_db/", "table": {"table": "casework.cases", "watermark": "updated_at"}}
        elif kind == "http_api":
            source = {"location": "courts/hearings_api/", "api": {
                "path": "v1/hearings", "records": "data", "pagination": "link",
                "incremental_param": "updated_since", "incremental_field": "updated_at"}}
        elif kind == "sftp":
            source["after_ingest"] = "archive"
        spec["source"] = ({"connection": connection} if connection != "landing" else {}) | source
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
    (work / "connections.yaml").write_text(
        f"# Written by `make run-sources` (compare {CONNECTIONS.name}); secrets are in the environment.\n"
        + yaml.safe_dump(connections, sort_keys=False))
    return datasets


def ingest_through_sensors(runner: Runner, defs: dg.Definitions, specs: list[DatasetSpec]) -> list[str]:
    """Tick each dataset's sensor until it has nothing more to ask for; run what it asks. Returns
    the daily partitions ingested."""
    days: list[str] = []
    for spec in specs:
        suffix = "extract" if spec.source.extracted else "landing"
        sensor = defs.get_sensor_def(f"{spec.domain}__{spec.name}__{suffix}")
        resources = {k: defs.resources[k] for k in sensor.required_resource_keys}
        cursor, quiet = None, 0
        while quiet < 2:  # stable-size sources need a second look before a file is taken
            tick = sensor.evaluate_tick(dg.build_sensor_context(
                instance=runner.instance, cursor=cursor, resources=resources, definitions=defs))
            cursor, requests_ = tick.cursor, tick.run_requests or []
            quiet = 0 if requests_ else quiet + 1
            if not requests_:
                continue
            keys = list(requests_[0].asset_selection)
            partitions = sorted(r.partition_key for r in requests_ if r.partition_key)
            label = f"{spec.key} via {CHANNELS[spec.key][0]}"
            if partitions:  # the sensor's daily batches, as one single-run backfill
                files = [f for r in requests_ for f in r.run_config["ops"][raw_op_name(spec)]["config"]["files"]]
                runner.run(f"{label} {partitions[0]}..{partitions[-1]}", keys,
                           {RANGE_START: partitions[0], RANGE_END: partitions[-1]},
                           {"ops": {raw_op_name(spec): {"config": {"files": files}}}})
                days += partitions
            else:
                for request in requests_:
                    runner.run(label, keys, dict(request.tags), request.run_config)
    return days


def print_sources(lake: Lake, specs: list[DatasetSpec]) -> None:
    from quayside.cli import _print_table

    files = Counter(read_system(lake, "raw", "manifest", EqualTo("status", "accepted"))["dataset"].to_pylist())
    extracts = read_system(lake, "raw", "extracts", AlwaysTrue())
    rows = Counter()
    for dataset, n in zip(extracts["dataset"].to_pylist(), extracts["rows"].to_pylist()):
        rows[dataset] += n
    print("\n== sources ==")
    _print_table(["dataset", "channel", "connection", "files in raw", "rows extracted"],
                 [[s.key, *CHANNELS[s.key], str(files[s.key]), f"{rows[s.key]:,}" if s.key in rows else ""]
                  for s in specs])


if __name__ == "__main__":
    sys.exit(main())
