"""Side-by-side measurement: each contender runs in a fresh process, contenders alternate within
each repetition, and the figures reported are medians, so ratios hold on a noisy shared machine.

Peak memory is the kernel's accounting of each child process (its VmHWM), not a guess from
inside Python.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Sample:
    seconds: float
    peak_rss_mb: float
    extra: dict = field(default_factory=dict)


@dataclass
class Figures:
    """Medians over the repetitions of one contender."""

    seconds: float
    peak_rss_mb: float
    extra: dict
    samples: list[Sample]


def run_child(target: str, **arguments) -> Sample:
    """Run `module:function` in a new Python process; its wall time (as it measured) and peak RSS."""
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "benchmarks.child", target, json.dumps(arguments)],
                                stdout=subprocess.PIPE, stderr=stderr, cwd=ROOT,
                                env=os.environ | {"PYTHONWARNINGS": "ignore"})
        out = proc.stdout.read()
        if proc.wait() != 0:
            stderr.seek(0)
            raise RuntimeError(f"{target} failed ({proc.returncode}):\n{stderr.read().decode()[-3000:]}")
    result = json.loads(out.decode().strip().splitlines()[-1])
    return Sample(result.pop("seconds"), result.pop("peak_rss_mb"), result)


def compare(contenders: dict[str, tuple[str, dict]], repetitions: int = 3,
            before_each=None, once: frozenset[str] = frozenset()) -> dict[str, Figures]:
    """Run every contender `repetitions` times, rotating the order each round; `before_each(name)`
    resets shared state (e.g. drops the table a contender writes) outside the timing. Contenders
    in `once` (minutes a run) run in the first round only."""
    samples: dict[str, list[Sample]] = {name: [] for name in contenders}
    names = list(contenders)
    for round_ in range(repetitions):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            if round_ and name in once:
                continue
            if before_each:
                before_each(name)
            target, arguments = contenders[name]
            samples[name].append(run_child(target, **arguments))
            last = samples[name][-1]
            extra = "  ".join(f"{k} {v:.4g}" for k, v in last.extra.items() if isinstance(v, float))
            print(f"    {name:<14} {last.seconds:8.2f} s  {last.peak_rss_mb:7.0f} MB  {extra}", flush=True)
    return {name: _medians(runs) for name, runs in samples.items()}


def _medians(runs: list[Sample]) -> Figures:
    keys = {k for r in runs for k, v in r.extra.items() if isinstance(v, (int, float))}
    return Figures(statistics.median(r.seconds for r in runs), statistics.median(r.peak_rss_mb for r in runs),
                   {k: statistics.median(r.extra[k] for r in runs if k in r.extra) for k in keys}, runs)


def machine() -> dict:
    memory_kb = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return {"cores": os.cpu_count(), "memory_gib": round(memory_kb / 1024 ** 2, 1),
            "python": platform.python_version(), "platform": platform.platform(terse=True)}


def versions(*packages: str) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


@dataclass
class Row:
    """One line of docs/benchmarks.md."""

    scenario: str
    what: str
    quayside: str
    peer: str
    limit: str
    ratios: str
    goal: str
    met: bool | None  # None: a reference point without a goal
    notes: str = ""
