"""Watching landing for new files with a cursor, so a sensor tick costs what is new.

The cursor keeps the last key handed out (listing resumes StartAfter it), the files seen but
not yet stable (size still changing), and a tick counter: every `sweep_every` ticks the whole
prefix is listed once more to catch late files whose names sort before the cursor.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import PurePosixPath

from pyiceberg.expressions import EqualTo

from quayside.ingest import batch_date_of, read_system
from quayside.lake import FileInfo, Lake, Storage
from quayside.specs import DatasetSpec


@dataclass
class LandingCursor:
    after: str = ""  # every matching key <= after has been handed out
    pending: dict[str, int] = field(default_factory=dict)  # key -> size at the last look, not yet stable
    dispatched: list[str] = field(default_factory=list)  # keys > after already handed out
    ticks: int = 0

    @classmethod
    def parse(cls, text: str | None) -> LandingCursor:
        return cls(**json.loads(text)) if text else cls()

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class Batch:
    batch_date: date | None
    keys: list[str]


def poll(lake: Lake, spec: DatasetSpec, cursor: LandingCursor, sweep_every: int = 60,
         max_files: int = 50_000, latest_batch: date | None = None,
         source: Storage | None = None) -> tuple[list[Batch], LandingCursor, int]:
    """New, stable files in landing (or the dataset's connection, `source`) grouped into one batch
    per daily partition (or one batch if unpartitioned).

    Files of a batch later than `latest_batch` (a day whose partition does not exist yet) wait.
    Returns (batches, new cursor, number of files listed this tick).
    """
    source = source or lake.landing
    sweep = cursor.ticks % sweep_every == sweep_every - 1
    known = _known_landing_keys(lake, spec) if sweep else set()
    dispatched = set(cursor.dispatched)
    ready: list[FileInfo] = []
    pending: dict[str, int] = {}
    after, listed = cursor.after, 0
    start = "" if sweep else cursor.after
    # Pending files that sort before where listing starts (late ones a sweep found) are looked at directly.
    earlier = [source.info(k) for k in sorted(cursor.pending) if start and k <= start]
    for info in itertools.chain(filter(None, earlier), source.list(spec.source.location, start)):
        listed += 1
        matches = spec.source.matches(PurePosixPath(info.key).name)
        if matches and info.key not in known and info.key not in dispatched:
            # An object-store PUT is atomic; a local (or SFTP/share) file may still be growing.
            too_early = latest_batch is not None and spec.daily_partitioned and batch_date_of(
                spec, PurePosixPath(info.key).name, info.modified) > latest_batch
            if too_early or (not source.atomic_writes and cursor.pending.get(info.key) != info.size):
                pending[info.key] = info.size
            elif len(ready) < max_files:
                ready.append(info)
                dispatched.add(info.key)
            else:
                break
        if not pending and (info.key in dispatched or info.key in known or not matches):
            after = max(after, info.key)  # contiguous prefix of finished keys: resume after it
    dispatched = {k for k in dispatched if k > after}
    new_cursor = LandingCursor(after=after, pending=pending, dispatched=sorted(dispatched), ticks=cursor.ticks + 1)
    return _group(spec, ready), new_cursor, listed


def _known_landing_keys(lake: Lake, spec: DatasetSpec) -> set[str]:
    manifest = read_system(lake, "raw", "manifest", EqualTo("dataset", spec.key))
    return set(manifest["landing_key"].to_pylist())


def _group(spec: DatasetSpec, files: list[FileInfo]) -> list[Batch]:
    if not spec.daily_partitioned:
        return [Batch(None, [f.key for f in files])] if files else []
    by_day: dict[date, list[str]] = defaultdict(list)
    for f in files:
        by_day[batch_date_of(spec, PurePosixPath(f.key).name, f.modified)].append(f.key)
    return [Batch(day, keys) for day, keys in sorted(by_day.items())]
