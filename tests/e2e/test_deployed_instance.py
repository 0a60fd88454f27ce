"""The production instance (deploy/dagster.yaml) run for real: PostgreSQL 15 storage over TLS, a
dagster-daemon and the webserver as separate processes, the QueuedRunCoordinator's limits, and the
sensors' runs completing into the same tables as `make run`. Only the run launcher differs (the
default one: ECS cannot run here); the ECS launcher's configuration is loaded against moto's ECS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import date
from pathlib import Path

import pytest
import yaml

from quayside import local_servers
from quayside.demo import generate
from quayside.lake import Lake, LakeSettings
from sensors import CONNECTION_TAG

PROJECT = Path(__file__).resolve().parents[2]
BIN = PROJECT / ".venv" / "bin"
PRODUCTION_YAML = PROJECT / "deploy" / "dagster.yaml"
PG_PASSWORD = "instance-test-secret"


def instance_yaml(ca_file: Path) -> dict:
    """deploy/dagster.yaml without the run launcher, trusting the test server's CA instead of RDS's."""
    config = yaml.safe_load(PRODUCTION_YAML.read_text())
    del config["run_launcher"]
    config["storage"]["postgres"]["postgres_db"]["params"]["sslrootcert"] = str(ca_file)
    return config


@contextmanager
def service(args: list[str], log: Path, env: dict) -> Iterator[subprocess.Popen]:
    """A long-running Dagster process in its own process group (the daemon's code server and the
    runs it launches are its children), stopped with all of them."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=PROJECT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def graphql(port: int, query: str) -> dict:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)["data"]


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of (start, end) intervals open at one moment."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    open_now = peak = 0
    for _, step in edges:  # an end sorts before a start at the same instant
        open_now += step
        peak = max(peak, open_now)
    return peak


def staged_counts(lake: Lake, tables: list[str]) -> dict[str, int | None]:
    con = lake.connect()
    counts = {}
    for table in tables:
        try:
            counts[table] = con.sql(f"SELECT count(*) FROM {table}").fetchone()[0]
        except Exception:  # not created yet
            counts[table] = None
    return counts


@pytest.mark.slow
def test_the_production_instance_queues_sensor_runs_within_its_limits_and_completes_them(tmp_path, monkeypatch):
    import dagster as dg

    lake = Lake(LakeSettings(home=str(tmp_path / "lake")))
    summary = generate(lake, end=date(2026, 11, 1), days=3)
    expected = {f"staged_{dataset}": rows for dataset, rows in summary.current_rows.items()}
    config = instance_yaml(tmp_path / "ca.pem")
    limits = config["run_coordinator"]["config"]
    per_connection = limits["tag_concurrency_limits"][0]["limit"]

    with ExitStack() as stack:
        url = stack.enter_context(local_servers.postgres(PG_PASSWORD, ca_file=tmp_path / "ca.pem"))
        home = tmp_path / "dagster"
        home.mkdir()
        (home / "dagster.yaml").write_text(yaml.safe_dump(config))
        for name, value in {"DAGSTER_HOME": str(home), "QUAYSIDE_PROFILE": "local", "QUAYSIDE_HOME": lake.settings.home,
                            "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": url.split(":")[2].split("/")[0],
                            "DAGSTER_PG_DB": "postgres", "DAGSTER_PG_USERNAME": "quayside",
                            "DAGSTER_PG_PASSWORD": PG_PASSWORD, "PYTHONWARNINGS": "ignore"}.items():
            monkeypatch.setenv(name, value)  # for the daemon and webserver, and this process's instance
        env = dict(os.environ)
        started = time.monotonic()
        stack.enter_context(service([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                                    tmp_path / "daemon.log", env))
        port = local_servers.free_port()
        stack.enter_context(service([str(BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
                                     "-w", "workspace.yaml"], tmp_path / "webserver.log", env))
        instance = stack.enter_context(dg.DagsterInstance.get())
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"

        terminal = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
        deadline = started + 480
        while True:
            # The sensors' runs; automation's runs of the curated layer that follow are not awaited.
            sensor_runs = [r for r in instance.get_run_records() if CONNECTION_TAG in r.dagster_run.tags]
            counts = staged_counts(lake, list(expected))
            if sensor_runs and all(r.dagster_run.status in terminal for r in sensor_runs) and counts == expected:
                break
            if time.monotonic() > deadline:
                states = sorted(r.dagster_run.status.value for r in sensor_runs)
                pytest.fail(f"not done after {deadline - started:.0f} s: runs {states}, rows {counts} != {expected}; "
                            f"logs in {tmp_path}")
            time.sleep(2)
        elapsed = time.monotonic() - started
        # The webserver serves the same storage: it lists every run the daemon launched.
        local_servers.wait_for_port(port, 60)
        shown = graphql(port, "{ runsOrError { ... on Runs { results { runId status } } } }")
        assert {r["runId"] for r in shown["runsOrError"]["results"]} >= {r.dagster_run.run_id for r in sensor_runs}
        everything = instance.get_run_records()
        # Every run that has ended succeeded: the sensors' and the curated layer's that automation started.
        failed = [r.dagster_run.run_id for r in everything
                  if r.dagster_run.status in terminal and r.dagster_run.status != dg.DagsterRunStatus.SUCCESS]
        assert not failed, f"runs failed: {failed}; logs in {tmp_path}"
        assert {r.dagster_run.tags[CONNECTION_TAG] for r in sensor_runs} == {"landing"}
        assert len(sensor_runs) > per_connection  # enough to need the queue
        for record in sensor_runs:  # every run was queued first, then dequeued by the daemon
            kinds = [e.dagster_event_type for e in instance.all_logs(
                record.dagster_run.run_id, of_type={dg.DagsterEventType.RUN_ENQUEUED, dg.DagsterEventType.RUN_START})]
            assert kinds == [dg.DagsterEventType.RUN_ENQUEUED, dg.DagsterEventType.RUN_START]
        spans = lambda runs: [(r.start_time, r.end_time) for r in runs]  # noqa: E731
        assert most_at_once(spans(sensor_runs)) == per_connection  # the limit held and was used
        assert most_at_once(spans(r for r in everything if r.end_time)) <= limits["max_concurrent_runs"]
        waited = [r.start_time - r.create_timestamp.timestamp() for r in sensor_runs]
        print(f"\n{len(everything)} runs ({len(sensor_runs)} from sensors) in {elapsed:.0f} s; at most "
              f"{most_at_once(spans(sensor_runs))} sensor runs at once; longest queued {max(waited):.0f} s")


def test_the_ecs_run_launcher_of_the_production_instance_loads_against_ecs(moto_endpoint, monkeypatch):
    """What can be checked of ECS here: deploy/dagster.yaml's launcher loads with its settings from
    the environment and finds the run task definition (on moto's ECS), and refuses a missing one."""
    import boto3
    from dagster._serdes import ConfigurableClassData

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-2")
    boto3.client("ecs").register_task_definition(
        family="quayside-run", requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="1024", memory="4096",
        containerDefinitions=[{"name": "run", "image": "quayside:test", "command": ["dagster", "api", "execute_run"]}])
    monkeypatch.setenv("DAGSTER_ECS_RUN_CONTAINER", "run")
    config = yaml.safe_load(PRODUCTION_YAML.read_text())["run_launcher"]
    load = lambda: ConfigurableClassData(config["module"], config["class"],  # noqa: E731
                                         yaml.safe_dump(config["config"])).rehydrate(object)
    monkeypatch.setenv("DAGSTER_ECS_RUN_TASK_DEFINITION", "quayside-run")
    launcher = load()
    assert type(launcher).__name__ == "EcsRunLauncher"
    assert launcher.task_definition.endswith(":task-definition/quayside-run:1") and launcher.container_name == "run"
    assert launcher.propagate_tags["allow_list"] == ["quayside/dataset", "quayside/connection"]
    monkeypatch.setenv("DAGSTER_ECS_RUN_TASK_DEFINITION", "no-such-family")
    with pytest.raises(Exception, match="(?i)not found|unable to describe|does not exist|ClientException"):
        load()
