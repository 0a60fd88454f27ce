"""Scenario 4: a sensor tick with 1k / 10k / 100k objects in an S3 prefix (moto server) and 10 new.

Quayside: `quayside.watch.poll` over an S3 connection, resuming from its cursor (StartAfter).
Peer: `dagster_aws.s3.sensor.get_objects(since_key=…)`, which lists the whole prefix each tick.
Limit: one `ListObjectsV2` call starting after the cursor.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from benchmarks.harness import Row, compare

PATTERN = r"events_[\d_]+\.csv"
TICKS = 5


def _client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-2", aws_access_key_id="bench",
                        aws_secret_access_key="bench")


def _deliver(s3, bucket: str) -> None:
    """10 new objects, named to sort after everything there (as dated supplier files do)."""
    stamp = time.time_ns()
    for i in range(10):
        s3.put_object(Bucket=bucket, Key=f"events/events_9{stamp}_{i}.csv", Body=b"id\n1\n")


def quayside(clock, endpoint: str, bucket: str, home: str, caught_up_at: str) -> dict:
    from quayside.connections import open_connection, parse_connection
    from quayside.lake import Lake, LakeSettings
    from quayside.specs import DatasetSpec
    from quayside.watch import LandingCursor, poll

    spec = DatasetSpec.model_validate({
        "name": "events", "domain": "bench", "description": "bench", "owner": "team:bench",
        "source": {"connection": "supplier", "location": "events/", "pattern": PATTERN, "format": "csv"},
        "columns": [{"name": "id", "type": "int"}]})
    source = open_connection(parse_connection("supplier", {
        "type": "s3", "bucket": bucket, "endpoint_url": endpoint, "access_key_id": "bench",
        "secret_access_key": "bench"}))
    lake, s3 = Lake(LakeSettings(home=home)), _client(endpoint)
    # Caught up to the generated objects (moto lists a page in O(prefix): catching up from scratch
    # at 100k costs minutes, and is not what is measured); then to earlier contenders' deliveries.
    cursor, handed_out = LandingCursor(after=caught_up_at), True
    while handed_out:
        batches, cursor, _ = poll(lake, spec, cursor, source=source)
        handed_out = bool(batches)
    ticks = []
    for _ in range(TICKS):
        _deliver(s3, bucket)
        started = time.perf_counter()
        batches, cursor, _ = poll(lake, spec, cursor, source=source)
        ticks.append(time.perf_counter() - started)
        assert sum(len(b.keys) for b in batches) == 10
    return {"tick_seconds": statistics.median(ticks)}


def dagster_get_objects(clock, endpoint: str, bucket: str, home: str, caught_up_at: str, ticks: int = TICKS) -> dict:
    from dagster_aws.s3.sensor import get_objects

    s3 = _client(endpoint)
    since = caught_up_at  # each call lists the whole prefix, whatever since_key is
    times = []
    for _ in range(ticks):
        _deliver(s3, bucket)
        started = time.perf_counter()
        new = get_objects(bucket, "events/", since_key=since, client=s3)
        times.append(time.perf_counter() - started)
        since = new[-1]["Key"] if new else since
    return {"tick_seconds": statistics.median(times)}


def one_list_call(clock, endpoint: str, bucket: str, home: str, caught_up_at: str) -> dict:
    s3 = _client(endpoint)
    after = max((o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix="events/", StartAfter=caught_up_at) for o in page.get("Contents", [])),
        default=caught_up_at)
    ticks = []
    for _ in range(TICKS):
        _deliver(s3, bucket)
        started = time.perf_counter()
        new = s3.list_objects_v2(Bucket=bucket, Prefix="events/", StartAfter=after).get("Contents", [])
        ticks.append(time.perf_counter() - started)
        after = new[-1]["Key"]
    return {"tick_seconds": statistics.median(ticks)}


def run(data: Path, work: Path, quick: bool, repetitions: int) -> dict:
    from moto.s3.models import s3_backends

    from quayside import local_servers

    sizes = [100, 1_000] if quick else [1_000, 10_000, 100_000]
    here = "benchmarks.scenarios.sensor_tick"
    results = {}
    with local_servers.moto() as endpoint:
        s3 = _client(endpoint)
        for size in sizes:
            bucket = f"bench-{size}"
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
            # The server runs in this process: fill the bucket through moto's backend (100k PUTs
            # over HTTP would take minutes); what the contenders then list is the same.
            backend = s3_backends["123456789012"]["aws"]
            for i in range(size):
                backend.put_object(bucket, f"events/events_{i:08d}.csv", b"id\n1\n")
            print(f"  {size:,} objects in the prefix", flush=True)
            common = {"endpoint": endpoint, "bucket": bucket, "home": str(work / "s4"),
                      "caught_up_at": f"events/events_{size - 1:08d}.csv"}
            # get_objects lists the whole prefix each tick (~14 s at 10k, ~150 s at 100k on moto):
            # from 10k, one tick in one round.
            slow = size >= 10_000
            results[size] = compare({
                "quayside": (f"{here}:quayside", common),
                "dagster_aws": (f"{here}:dagster_get_objects", common | {"ticks": 1 if slow else TICKS}),
                "limit": (f"{here}:one_list_call", common),
            }, repetitions, once=frozenset({"dagster_aws"} if slow else ()))
    return {"sizes": sizes, "figures": results}


def report(result: dict, plots: Path) -> list[Row]:
    from lake_assets.metadata import new_figure

    sizes, f = result["sizes"], result["figures"]
    tick = {size: {name: fig.extra["tick_seconds"] for name, fig in f[size].items()} for size in sizes}
    fig, ax = new_figure()
    for name, label in (("quayside", "Quayside (cursor)"), ("dagster_aws", "dagster_aws get_objects"),
                        ("limit", "one ListObjectsV2 call")):
        ax.plot(sizes, [tick[s][name] * 1000 for s in sizes], marker="o", label=label)
    ax.set(xscale="log", yscale="log", xlabel="objects already in the prefix", ylabel="tick (ms), 10 new objects",
           title="Scenario 4: sensor tick vs prefix size (moto S3)")
    ax.legend(fontsize=7)
    fig.savefig(plots / "s4_sensor_tick.png", dpi=110, bbox_inches="tight")
    smallest, largest = sizes[0], sizes[-1]
    growth = tick[largest]["quayside"] / tick[smallest]["quayside"]

    def series(name: str) -> str:
        return " / ".join(f"{tick[s][name] * 1000:.1f}" for s in sizes) + " ms"

    q, peer, limit = (tick[largest][n] for n in ("quayside", "dagster_aws", "limit"))
    return [Row(
        "4", f"sensor tick with {' / '.join(f'{s:,}' for s in sizes)} objects in an S3 prefix (moto) + 10 new",
        series("quayside"), f"dagster_aws get_objects {series('dagster_aws')}", f"one ListObjectsV2 {series('limit')}",
        f"at {largest:,}: {q / limit:.2f}× limit, {peer / q:.0f}× faster than dagster_aws; "
        f"{growth:.2f}× the tick at {smallest:,}",
        f"< 1 s at {largest:,}, ≤ 1.2× the tick at {smallest:,}", q < 1 and growth <= 1.2,
        f"medians of {TICKS} ticks a run; dagster_aws from 10,000 objects: one tick in one round (it lists the "
        "whole prefix each tick)")]
