"""The benchmark harness keeps working (a smoke run on small data; no timing assertions)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.run import SCENARIOS

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_make_bench_quick_run_of_the_side_by_side_scenarios():
    result = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick"],
                            capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    for contender in ("quayside", "dlt_iceberg", "dlt_parquet", "dlt_connectorx", "dlt_pyarrow", "dagster_aws",
                      "pyiceberg_upsert", "dagster_dbt", "per_partition", "limit", "no_maintenance"):
        assert contender in result.stdout
    for scenario in SCENARIOS:
        assert f"scenario {scenario} took" in result.stdout
