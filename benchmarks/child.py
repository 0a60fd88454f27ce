"""Runs one benchmark contender in a process of its own: `python -m benchmarks.child module:function '{json}'`.

The function gets its keyword arguments and a `clock`; it calls `clock.start()` once its imports
and set-up are done, so only the work is timed. It may return a dict of extra figures. One JSON
line goes to stdout: {"seconds": ..., **extra}. Peak memory is read by the parent from the OS.
"""

import importlib
import json
import sys
import time


class Clock:
    def __init__(self) -> None:
        self.started = time.perf_counter()

    def start(self) -> None:
        self.started = time.perf_counter()


def main() -> None:
    target, arguments = sys.argv[1], json.loads(sys.argv[2])
    module, function = target.split(":")
    contender = getattr(importlib.import_module(module), function)
    clock = Clock()
    extra = contender(clock=clock, **arguments) or {}
    seconds = time.perf_counter() - clock.started
    print(json.dumps({"seconds": seconds, **extra}), flush=True)


if __name__ == "__main__":
    main()
