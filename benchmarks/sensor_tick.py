"""Benchmark: one S3 connector sensor tick (quayside.watch.poll over an S3 source) with N objects
already in the prefix and 10 new ones, against a moto server on 127.0.0.1.

    .venv/bin/python benchmarks/sensor_tick.py                 # 1,000 and 10,000 existing objects
    .venv/bin/python benchmarks/sensor_tick.py --sizes 100     # quick

The cursor (StartAfter on sortable keys) makes a tick list only what is new; the first tick, with
no cursor, lists everything. Medians of 5 ticks; each tick gets 10 new objects.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from quayside.connections import open_connection, parse_connection  # noqa: E402
from quayside.lake import Lake, LakeSettings  # noqa: E402
from quayside.specs import DatasetSpec  # noqa: E402
from quayside.watch import LandingCursor, poll  # noqa: E402

SPEC = DatasetSpec.model_validate({
    "name": "events", "domain": "bench", "description": "bench", "owner": "team:bench",
    "source": {"connection": "supplier", "location": "events/", "pattern": r"events_\d{8}\.csv", "format": "csv"},
    "columns": [{"name": "id", "type": "int"}]})


def main() -> int:
    import boto3
    from moto.server import ThreadedMotoServer

    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000])
    args = parser.parse_args()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="eu-west-2", aws_access_key_id="x",
                      aws_secret_access_key="x")
    lake = Lake(LakeSettings(home=tempfile.mkdtemp()))
    print(f"{'existing':>9}  {'first tick (no cursor)':>22}  {'tick with 10 new (median of 5)':>30}")
    for n, size in enumerate(args.sizes):
        bucket = f"bench-{n}"
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda i: s3.put_object(Bucket=bucket, Key=f"events/events_{i:08d}.csv", Body=b"id\n1\n"),
                          range(size)))
        source = open_connection(parse_connection("supplier", {
            "type": "s3", "bucket": bucket, "endpoint_url": endpoint, "access_key_id": "x", "secret_access_key": "x"}))
        t0 = time.perf_counter()
        _, cursor, listed = poll(lake, SPEC, LandingCursor(), source=source)
        first = time.perf_counter() - t0
        ticks = []
        for tick in range(5):
            for i in range(10):
                s3.put_object(Bucket=bucket, Key=f"events/events_{size + tick * 10 + i:08d}.csv", Body=b"id\n1\n")
            t0 = time.perf_counter()
            batches, cursor, listed = poll(lake, SPEC, cursor, source=source)
            ticks.append(time.perf_counter() - t0)
            assert sum(len(b.keys) for b in batches) == 10 and listed == 10, (batches, listed)
        print(f"{size:>9,}  {first:>20.3f} s  {statistics.median(ticks):>28.3f} s")
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
