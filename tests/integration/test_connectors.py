"""Source connections end to end: files placed in a real server (or share) → sensor tick → run →
rows in the staged Iceberg table, with the source file removed only after the verified copy."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import boto3
import dagster as dg
import pytest

from quayside import local_servers
from quayside.connections import load_connections, parse_connection
from quayside.demo import generate
from quayside.lake import Lake, LakeSettings
from tests.conftest import DATASETS

SECRET = "supplier-secret-7f3a9c"  # moto accepts any key: the tests only check it never leaks


@pytest.fixture
def demo_files(tmp_path) -> dict[str, bytes]:
    """The demo tenant's prison-population deliveries, as a supplier would hold them."""
    scratch = Lake(LakeSettings(home=str(tmp_path / "scratch")))
    generate(scratch, end=date(2026, 11, 1), days=3)
    return {f.key: scratch.landing.read_bytes(f.key) for f in scratch.landing.list("prisons/population/")}


def project(tmp_path: Path, connection: dict, after_ingest: str) -> tuple[Path, Path]:
    """The demo's datasets with the prisons spec read from `supplier`, and a connections file."""
    datasets = tmp_path / "datasets"
    shutil.copytree(DATASETS, datasets)
    spec = datasets / "prisons" / "population.yaml"
    spec.write_text(spec.read_text().replace("  location: prisons/population/",
                                             f"  connection: supplier\n  location: prisons/population/\n"
                                             f"  after_ingest: {after_ingest}"))
    connections = tmp_path / "connections.yaml"
    connections.write_text("supplier:\n" + "".join(f"  {k}: {v}\n" for k, v in connection.items()))
    return datasets, connections


def run_sensor_and_runs(datasets: Path, connections: Path, ticks: int = 1):
    from lake_assets.definitions import build_definitions

    defs = build_definitions(datasets, connections)
    sensor = defs.get_sensor_def("prisons__population__landing")
    instance, cursor, results = dg.DagsterInstance.ephemeral(), None, []
    resources = {k: defs.resources[k] for k in ("lake", "supplier")}
    for _ in range(ticks):
        tick = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources,
                                                            definitions=defs))
        cursor = tick.cursor
        for request in tick.run_requests:
            job = defs.resolve_implicit_job_def_def_for_assets(list(request.asset_selection))
            results.append(job.execute_in_process(instance=instance, partition_key=request.partition_key,
                                                  run_config=request.run_config,
                                                  asset_selection=list(request.asset_selection)))
    return results, instance


@pytest.fixture
def lake_env(tmp_path, monkeypatch) -> Lake:
    monkeypatch.setenv("QUAYSIDE_PROFILE", "local")
    monkeypatch.setenv("QUAYSIDE_HOME", str(tmp_path / "lake"))
    return Lake(LakeSettings(home=str(tmp_path / "lake")))


def staged_count(lake: Lake) -> int:
    return lake.connect().sql("SELECT count(*) FROM staged_prisons.population").fetchone()[0]


@pytest.mark.aws
def test_s3_bucket_in_another_account(tmp_path, monkeypatch, moto_endpoint, lake_env, demo_files):
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="eu-west-2")
    s3.create_bucket(Bucket="supplier-drop", CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    for key, body in demo_files.items():
        s3.put_object(Bucket="supplier-drop", Key=f"exports/{key}", Body=body)
    s3.put_object(Bucket="supplier-drop", Key="elsewhere/prisons/population/prison_population_2026-10-30.csv", Body=b"x")
    monkeypatch.setenv("SUPPLIER_ENDPOINT", moto_endpoint)
    monkeypatch.setenv("SUPPLIER_SECRET", SECRET)
    datasets, connections = project(tmp_path, {
        "type": "s3", "bucket": "supplier-drop", "prefix": "exports", "region": "eu-west-2",
        "endpoint_url": "env:SUPPLIER_ENDPOINT", "access_key_id": "supplier-key",
        "secret_access_key": "env:SUPPLIER_SECRET"}, after_ingest="delete")

    results, instance = run_sensor_and_runs(datasets, connections, ticks=2)
    assert results and all(r.success for r in results)
    assert sorted(r.dagster_run.tags["dagster/partition"] for r in results) == ["2026-10-30", "2026-10-31", "2026-11-01"]
    expected_rows = sum(body.count(b"\n") - 1 for key, body in demo_files.items()
                        if "/manual/" not in key and "resend" not in key and key.endswith(".csv")) - 3
    assert staged_count(lake_env) == expected_rows  # three rows with population 'lots' went to quarantine
    remaining = [o["Key"] for o in s3.list_objects_v2(Bucket="supplier-drop").get("Contents", [])]
    # Taken files are deleted only after their verified copy; others under the prefix stay.
    assert "exports/prisons/population/readme.txt" in remaining and not any(
        k.startswith("exports/prisons/population/prison_population_") for k in remaining)
    assert "elsewhere/prisons/population/prison_population_2026-10-30.csv" in remaining
    manifest = lake_env.connect().sql("SELECT count(*) FROM raw.manifest WHERE status = 'accepted'").fetchone()[0]
    assert manifest == len(list(lake_env.raw.list("prisons/population/")))
    # The secret never reaches the event log (run config shows only the variable's name).
    for record in instance.get_event_records(dg.EventRecordsFilter(event_type=dg.DagsterEventType.RUN_START)):
        run = instance.get_run_by_id(record.run_id)
        assert SECRET not in str(run.run_config)
    for result in results:
        assert not any(SECRET in str(e) for e in instance.all_logs(result.run_id))


def test_mounted_file_share_waits_for_files_to_stop_growing_and_archives(tmp_path, lake_env, demo_files):
    share = tmp_path / "share"
    for key, body in demo_files.items():
        (share / key).parent.mkdir(parents=True, exist_ok=True)
        (share / key).write_bytes(body)
    datasets, connections = project(tmp_path, {"type": "fileshare", "root": str(share)}, after_ingest="archive")

    results, _ = run_sensor_and_runs(datasets, connections, ticks=1)
    assert results == []  # first look: sizes noted, nothing taken while files might still be growing
    results, _ = run_sensor_and_runs(datasets, connections, ticks=2)
    assert results and all(r.success for r in results) and staged_count(lake_env) > 0
    archived = sorted(p.name for p in (share / "_archive" / "prisons" / "population").rglob("*.csv"))
    assert "prison_population_2026-11-01.csv" in archived
    assert not list((share / "prisons" / "population").glob("prison_population_*.csv"))


@pytest.mark.parametrize("settings, message", [
    ({"type": "s3"}, "bucket: Field required"),
    ({"type": "s3", "bucket": "b", "prefix": "../up"}, "prefix"),
    ({"type": "fileshare", "root": "relative/share"}, "must be an absolute path"),
    ({"type": "ftp", "root": "/x"}, "type"),
])
def test_bad_connection_settings_name_the_connection_and_field(settings, message):
    with pytest.raises(ValueError, match="connection 'supplier'") as err:
        parse_connection("supplier", settings)
    assert message in str(err.value)


def test_a_spec_naming_an_undeclared_connection_is_refused_at_load(tmp_path):
    from lake_assets.definitions import build_definitions

    datasets, connections = project(tmp_path, {"type": "fileshare", "root": str(tmp_path)}, after_ingest="keep")
    connections.write_text("")
    with pytest.raises(ValueError, match="prisons.population: source.connection 'supplier'"):
        build_definitions(datasets, connections)
    assert load_connections(connections) == {}


# --- SFTP: OpenSSH's sshd on 127.0.0.1 ------------------------------------------------------------
@pytest.fixture(scope="module")
def sftp_server(tmp_path_factory):
    """A real sshd serving SFTP only, key authentication only, from a data folder."""
    home = tmp_path_factory.mktemp("sftp")
    with local_servers.sshd(home) as (settings, data):
        yield settings, data, home


def test_sftp_drop_lands_after_stable_size_and_archives_on_the_server(tmp_path, lake_env, demo_files, sftp_server):
    settings, data, _ = sftp_server
    for key, body in demo_files.items():
        (data / key).parent.mkdir(parents=True, exist_ok=True)
        (data / key).write_bytes(body)
    datasets, connections = project(tmp_path, settings, after_ingest="archive")
    results, _ = run_sensor_and_runs(datasets, connections, ticks=2)
    assert results and all(r.success for r in results)
    assert sorted(r.dagster_run.tags["dagster/partition"] for r in results) == ["2026-10-30", "2026-10-31", "2026-11-01"]
    assert staged_count(lake_env) == 3 * 120 - 3
    assert (data / "_archive/prisons/population/prison_population_2026-11-01.csv").exists()
    assert not list((data / "prisons/population").glob("prison_population_*.csv"))
    assert (data / "prisons/population/readme.txt").exists()  # matches no dataset: left alone


def test_sftp_refuses_unknown_and_changed_host_keys(tmp_path, sftp_server):
    import subprocess

    from quayside.connections import open_connection
    from quayside.sftp import SftpError

    settings, _, home = sftp_server
    empty = tmp_path / "known_hosts_empty"
    empty.write_text("")
    with pytest.raises(SftpError, match="host key unknown, refusing to connect"):
        list(open_connection(parse_connection("supplier", settings | {"known_hosts": str(empty)})).list())
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "impostor")], check=True)
    impostor = (tmp_path / "impostor.pub").read_text().split(" ")
    changed = tmp_path / "known_hosts_changed"
    changed.write_text(f"[127.0.0.1]:{settings['port']} {impostor[0]} {impostor[1]}\n")
    with pytest.raises(SftpError, match="host key CHANGED"):
        list(open_connection(parse_connection("supplier", settings | {"known_hosts": str(changed)})).list())


def test_sftp_resumes_after_a_dropped_connection(sftp_server):
    from quayside.connections import open_connection

    settings, data, _ = sftp_server
    (data / "drop").mkdir(exist_ok=True)
    (data / "drop" / "a.csv").write_bytes(b"x,y\n1,2\n")
    storage = open_connection(parse_connection("supplier", settings))
    assert [f.key for f in storage.list("drop/")] == ["drop/a.csv"]
    storage._client.get_transport().close()  # the server or network drops us mid-session
    assert storage.info("drop/a.csv").size == 8
    assert storage.sha256("drop/a.csv") == __import__("hashlib").sha256(b"x,y\n1,2\n").hexdigest()
    assert storage.info("drop/missing.csv") is None


def test_sftp_reads_every_size_whole_and_a_stream_left_early_does_not_disturb_the_next(sftp_server):
    """Sizes around the 32 KB read piece and past the read-ahead window, read back byte for byte;
    a stream closed with reads in flight leaves the connection clean for the next file."""
    import os

    from quayside.connections import open_connection
    from quayside.sftp import _PipelinedReader

    settings, data, _ = sftp_server
    (data / "sizes").mkdir(exist_ok=True)
    piece, window = _PipelinedReader.PIECE, _PipelinedReader.PIECE * _PipelinedReader.READ_AHEAD
    sizes = [0, 1, piece - 1, piece, piece + 1, window + piece // 2, 3 * window]
    bodies = {size: os.urandom(size) for size in sizes}
    for size, body in bodies.items():
        (data / "sizes" / f"{size}.bin").write_bytes(body)
    storage = open_connection(parse_connection("supplier", settings))
    for size, body in bodies.items():
        with storage.open_stream(f"sizes/{size}.bin") as stream:
            assert stream.read() == body, size
    with storage.open_stream(f"sizes/{3 * window}.bin") as stream:
        assert stream.read(10) == bodies[3 * window][:10]  # closed with a window of reads in flight
    with storage.open_stream(f"sizes/{piece + 1}.bin") as stream:
        assert stream.read() == bodies[piece + 1]


# --- Azure Blob Storage: Azurite on 127.0.0.1 -----------------------------------------------------
@pytest.fixture(scope="module")
def azurite():
    with local_servers.azurite() as connection_string:
        yield connection_string


def test_azure_blob_container_lands_and_deletes_after_verified_copy(tmp_path, monkeypatch, lake_env, demo_files,
                                                                     azurite):
    from azure.storage.blob import BlobServiceClient

    container = BlobServiceClient.from_connection_string(azurite).create_container("supplier")
    for key, body in demo_files.items():
        container.upload_blob(f"outbound/{key}", body)
    monkeypatch.setenv("SUPPLIER_AZURE", azurite)
    datasets, connections = project(tmp_path, {"type": "azure_blob", "container": "supplier", "prefix": "outbound",
                                               "connection_string": "env:SUPPLIER_AZURE"}, after_ingest="delete")
    results, instance = run_sensor_and_runs(datasets, connections, ticks=2)
    assert results and all(r.success for r in results)
    assert staged_count(lake_env) == 3 * 120 - 3
    left = sorted(b.name for b in container.list_blobs())
    assert "outbound/prisons/population/readme.txt" in left
    assert not any(name.startswith("outbound/prisons/population/prison_population_") for name in left)
    for result in results:  # the connection string (with the account key) never reaches the event log
        assert not any(local_servers.AZURITE_ACCOUNT_KEY in str(e) for e in instance.all_logs(result.run_id))


def test_unreachable_sftp_server_is_a_clear_error(sftp_server):
    from quayside.connections import open_connection
    from quayside.sftp import SftpError

    settings, _, _ = sftp_server
    closed = settings | {"port": local_servers.free_port()}  # nothing listens there
    with pytest.raises(SftpError, match=r"sftp://.*@127\.0\.0\.1:\d+: cannot connect"):
        open_connection(parse_connection("supplier", closed)).info("anything.csv")


@pytest.mark.aws
def test_a_file_that_vanishes_between_listing_and_copy_is_skipped(tmp_path, moto_endpoint, lake_env, demo_files):
    from quayside import ingest
    from quayside.connections import open_connection
    from quayside.specs import load_spec

    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="eu-west-2")
    s3.create_bucket(Bucket="vanishing", CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
    keys = sorted(k for k in demo_files if k.startswith("prisons/population/prison_population_"))[:2]
    for key in keys:
        s3.put_object(Bucket="vanishing", Key=key, Body=demo_files[key])
    source = open_connection(parse_connection("supplier", {"type": "s3", "bucket": "vanishing",
                                                           "endpoint_url": moto_endpoint}))
    datasets, _ = project(tmp_path, {"type": "s3", "bucket": "vanishing"}, after_ingest="keep")
    spec = load_spec(datasets / "prisons" / "population.yaml")
    listed = [f.key for f in ingest.landing_files(lake_env, spec, source=source)]
    assert listed == keys
    s3.delete_object(Bucket="vanishing", Key=keys[0])  # gone before the run copies it
    report = ingest.land(lake_env, spec, keys=listed, source=source)
    assert [r["landing_key"] for r in report.accepted] == [keys[1]]
    assert [f.key for f in lake_env.raw.list("prisons/population/")][0].endswith(keys[1].rsplit("/", 1)[1])


def test_odd_remote_names_are_never_followed(sftp_server):
    from quayside.connections import open_connection

    settings, data, _ = sftp_server
    folder = data / "odd"
    folder.mkdir(exist_ok=True)
    (folder / "..\\..\\escape.csv").write_bytes(b"x\n")  # a name a Windows-minded server might send
    (folder / ".quayside-tmp-123").write_bytes(b"x\n")
    (folder / "good.csv").write_bytes(b"x\n")
    storage = open_connection(parse_connection("supplier", settings))
    assert [f.key for f in storage.list("odd/")] == ["odd/good.csv"]
    with pytest.raises(ValueError):
        storage.info("../outside.csv")


LAND_IN_A_CHILD = """
import json, resource, sys
from pathlib import Path
from quayside import ingest
from quayside.connections import open_connection, parse_connection
from quayside.lake import Lake, LakeSettings
from quayside.specs import load_spec

settings, home, spec_path, key = json.loads(sys.argv[1])
report = ingest.land(Lake(LakeSettings(home=home)), load_spec(Path(spec_path)), keys=[key],
                     source=open_connection(parse_connection("supplier", settings)))
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "sha256": [r["sha256"] for r in report.accepted]}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["fileshare", "sftp"])
def test_a_1_gb_file_is_copied_with_bounded_memory(tmp_path, sftp_server, kind):
    """Peak RSS of a process landing a 1 GB file vs the same process landing a 10 MB one."""
    import hashlib
    import json
    import subprocess
    import sys

    settings, data, _ = sftp_server
    if kind == "fileshare":
        settings = {"type": "fileshare", "root": str(data)}
    datasets, _ = project(tmp_path, {"type": kind}, after_ingest="keep")
    folder = data / "big" / "prisons" / "population"
    folder.mkdir(parents=True, exist_ok=True)
    block = hashlib.sha256(b"quayside").hexdigest().encode() * (1 << 15)  # 2 MiB, not all one byte
    peaks = {}
    for name, blocks in (("prison_population_2026-11-01.csv", 5), ("prison_population_2026-11-02.csv", 512)):
        path = folder / name
        digest = hashlib.sha256()
        with path.open("wb") as f:
            for _ in range(blocks):
                f.write(block)
                digest.update(block)
        args = [settings | ({"root": str(data / "big")} if kind == "fileshare" else {"root": "big"}),
                str(tmp_path / f"lake-{blocks}"), str(datasets / "prisons/population.yaml"),
                f"prisons/population/{name}"]
        child = subprocess.run([sys.executable, "-c", LAND_IN_A_CHILD, json.dumps(args)], capture_output=True,
                               text=True, check=True)
        result = json.loads(child.stdout.splitlines()[-1])
        assert result["sha256"] == [digest.hexdigest()]  # landed whole and verified
        peaks[blocks] = result["peak_rss_mb"]
        path.unlink()
    assert peaks[512] - peaks[5] < 64, peaks  # 1 GiB through the process costs < 64 MB more than 10 MiB


def test_refused_credentials_are_clear_errors(tmp_path, sftp_server, azurite):
    import subprocess

    from azure.core.exceptions import HttpResponseError

    from quayside.connections import open_connection
    from quayside.sftp import SftpError

    settings, _, _ = sftp_server
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True)
    with pytest.raises(SftpError, match=r"sftp://.*@127\.0\.0\.1:\d+: Authentication failed"):
        open_connection(parse_connection("supplier", settings | {"private_key_path": str(tmp_path / "stranger")})).info("x")
    wrong_key = azurite.replace(local_servers.AZURITE_ACCOUNT_KEY, "A" * 86 + "==")
    with pytest.raises(HttpResponseError, match="Server failed to authenticate the request") as err:
        list(open_connection(parse_connection("supplier", {"type": "azure_blob", "container": "supplier",
                                                           "connection_string": wrong_key})).list())
    assert "A" * 86 not in str(err.value)


@pytest.mark.parametrize("kind", ["s3", "azure_blob"])
def test_unreachable_object_stores_are_retried_briefly_then_a_clear_error(kind):
    """A handful of retries, then an error naming the endpoint: well inside a sensor tick's 60 s."""
    import time

    from quayside.connections import open_connection

    port = local_servers.free_port()  # nothing listens there
    settings = ({"type": "s3", "bucket": "drop", "endpoint_url": f"http://127.0.0.1:{port}"} if kind == "s3" else
                {"type": "azure_blob", "container": "drop", "connection_string": (
                    f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
                    f"{local_servers.AZURITE_ACCOUNT_KEY};BlobEndpoint=http://127.0.0.1:{port}/devstoreaccount1;")})
    started = time.monotonic()
    with pytest.raises(Exception, match=rf"127\.0\.0\.1.{{1,10}}{port}") as err:
        list(open_connection(parse_connection("supplier", settings)).list())
    assert "connect" in str(err.value).lower() and time.monotonic() - started < 45
