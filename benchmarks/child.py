"""Runs one benchmark contender in a process of its own: `python -m benchmarks.child module:function '{json}'`.

The function gets its keyword arguments and a `clock`; it calls `clock.start()` once its imports
and set-up are done, so only the work is timed (and `clock.stop()` if it measures more after). It
may return a dict of extra figures. One JSON line goes to stdout:
{"seconds": ..., "peak_rss_mb": ..., **extra}.
"""

import importlib
import json
import sys
import time


class Clock:
    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.stopped: float | None = None

    def start(self) -> None:
        self.started = time.perf_counter()

    def stop(self) -> None:
        self.stopped = time.perf_counter()


def main() -> None:
    target, arguments = sys.argv[1], json.loads(sys.argv[2])
    module, function = target.split(":")
    contender = getattr(importlib.import_module(module), function)
    clock = Clock()
    extra = contender(clock=clock, **arguments) or {}
    seconds = (clock.stopped or time.perf_counter()) - clock.started
    print(json.dumps({"seconds": seconds, "peak_rss_mb": peak_rss_mb(), **extra}), flush=True)


def peak_rss_mb() -> float:
    """This process's resident-set high-water mark (VmHWM) as the kernel counts it. (A parent's
    wait4 ru_maxrss would not do: Linux carries the parent's peak into a forked child's.)"""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024


if __name__ == "__main__":
    main()
