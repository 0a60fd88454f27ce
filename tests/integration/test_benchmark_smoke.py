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
