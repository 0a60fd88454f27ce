"""The benchmark harness keeps working (a smoke run on small data; no timing assertions)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_cdc_benchmark_quick_run():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cdc_merge.py"), "--quick"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "skewed" in result.stdout and "uniform" in result.stdout


@pytest.mark.slow
def test_make_bench_quick_run_of_the_side_by_side_scenarios():
    result = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--scenario", "1", "--scenario", "4"],
                            capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    for contender in ("quayside", "dlt_iceberg", "dlt_parquet", "dagster_aws", "limit"):
        assert contender in result.stdout
    assert result.stdout.count("(goal ") == 2  # one verdict per scenario
