"""`quayside serve-ingest`, the push path, driven by a real HTTP client on 127.0.0.1."""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import date

import pytest
import requests

from quayside import ingest
from quayside.demo import generate
from quayside.lake import Lake, LakeSettings
from quayside.push import make_server, secret_env_name, signature
from quayside.specs import load_specs
from tests.conftest import DATASETS

SECRET = "push-secret-for-prisons"
PATH = "/datasets/prisons/population/files/"


@pytest.fixture
def server(tmp_path):
    specs = load_specs(DATASETS)
    lake = Lake(LakeSettings(home=str(tmp_path / "lake")))
    prisons = next(s for s in specs if s.key == "prisons.population")
    srv = make_server(lake, specs, port=0, max_bytes=64 * 1024, environ={secret_env_name(prisons): SECRET})
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}", lake
    srv.shutdown()
    srv.server_close()


def put(base: str, name: str, body: bytes, secret: str = SECRET, age: int = 0, path: str = PATH, **headers):
    timestamp = str(int(time.time()) - age)
    signed = signature(secret, timestamp, path + name, hashlib.sha256(body).hexdigest())
    return requests.put(base + path + name, data=body, timeout=10,
                        headers={"X-Quayside-Timestamp": timestamp, "X-Quayside-Signature": signed} | headers)


@pytest.fixture
def csv_file(tmp_path) -> bytes:
    scratch = Lake(LakeSettings(home=str(tmp_path / "scratch")))
    generate(scratch, end=date(2026, 11, 1), days=1)
    return scratch.landing.read_bytes("prisons/population/prison_population_2026-11-01.csv")


def test_a_signed_upload_lands_atomically_and_returns_a_receipt(server, csv_file):
    base, lake = server
    response = put(base, "prison_population_2026-11-01.csv", csv_file)
    assert response.status_code == 201, response.text
    receipt = response.json()
    assert receipt["sha256"] == hashlib.sha256(csv_file).hexdigest() and receipt["bytes"] == len(csv_file)
    assert receipt["key"] == "prisons/population/prison_population_2026-11-01.csv" and receipt["id"]
    assert lake.landing.read_bytes(receipt["key"]) == csv_file
    assert put(base, "prison_population_2026-11-01.csv", csv_file).status_code == 201  # same bytes again: fine
    assert put(base, "prison_population_2026-11-01.csv", csv_file + b"x").status_code == 409  # never overwritten
    # From here on it is an ordinary landing file: the landing sensor's run lands and stages it.
    spec = next(s for s in load_specs(DATASETS) if s.key == "prisons.population")
    ingest.land(lake, spec)
    report = ingest.stage(lake, spec, date(2026, 11, 1))
    assert (report.rows_staged, report.rows_quarantined) == (117, 3)  # the demo day has three 'lots' rows


@pytest.mark.parametrize("case, status", [
    ("unsigned", 401), ("wrong secret", 401), ("stale", 401), ("too big", 413), ("unknown dataset", 404),
    ("name not in pattern", 422), ("traversal", 422), ("dataset without a push secret", 401),
])
def test_refused_requests_write_nothing(server, csv_file, case, status):
    base, lake = server
    name = "prison_population_2026-11-02.csv"
    if case == "unsigned":
        response = requests.put(base + PATH + name, data=csv_file, timeout=10)
    elif case == "wrong secret":
        response = put(base, name, csv_file, secret="guess")
    elif case == "stale":
        response = put(base, name, csv_file, age=3600)
    elif case == "too big":
        response = put(base, name, csv_file * 200)
    elif case == "unknown dataset":
        response = put(base, name, csv_file, path="/datasets/prisons/nope/files/")
    elif case == "name not in pattern":
        response = put(base, "population.xlsx", csv_file)
    elif case == "traversal":
        response = put(base, "..%2F..%2Fetc%2Fprison_population_2026-11-02.csv", csv_file)
    else:  # only prisons has a secret configured: every other dataset accepts nothing
        response = put(base, "legal_aid_payments_2026-11-01.parquet", csv_file,
                       path="/datasets/legal_aid/payments/files/")
    assert response.status_code == status, response.text
    assert "error" in response.json()
    assert list(lake.landing.list()) == []


def test_the_body_must_be_the_datasets_format(tmp_path, csv_file):
    specs = load_specs(DATASETS)
    lake = Lake(LakeSettings(home=str(tmp_path / "lake")))
    payments = next(s for s in specs if s.key == "legal_aid.payments")
    srv = make_server(lake, specs, port=0, environ={secret_env_name(payments): SECRET})
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        response = put(f"http://127.0.0.1:{srv.server_port}", "legal_aid_payments_2026-11-01.parquet", csv_file,
                       path="/datasets/legal_aid/payments/files/")
        assert response.status_code == 415 and "not parquet" in response.json()["error"]
        assert list(lake.landing.list()) == []
    finally:
        srv.shutdown()
        srv.server_close()
