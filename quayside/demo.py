"""The demo tenant: a deterministic, seeded generator of landing files for seven justice datasets.

`generate(lake)` writes what the suppliers of a justice-flavoured public-sector organisation
would drop into the landing zone, under each spec's `source.location`
(specs: ``lake_assets/datasets/<domain>/<name>.yaml``; their partition start dates assume the
default ``end`` and ``days``). Same seed and scale => byte-identical files.

Good deliveries (scale 1):
  courts/cases/         AWS DMS: LOAD00000001-2.parquet (2,000-case full load, no Op column,
                        change_seq null) + 3 CDC files (I/U/D, Op first, full before-image on D)
  courts/hearings/      DMS: 5 LOAD files (5,000 hearings) + 2 CDC files
  courts/defendants/    DMS: 2 LOAD files (2,000 defendants, PII) + 1 CDC file
  courts/court_register/  the register of the 36 courts, re-sent weekly in full (two weeks; a court
                        opened in the second) -> staged holds the latest snapshot
  prisons/population/   one CSV per day x ~120 establishments
  legal_aid/payments/   two monthly Parquet files x ~3,000 payments (decimal amounts)
  monitoring/em_events/ one JSON-lines file per day x ~5,000 events
Note that DMS change files (``2026...``) sort before ``LOAD...`` in key order: ingestion must
apply full loads first and order changes by change_seq, not by listing order.

Deliberately awkward files (all listed in `DemoSummary.bad_files`) and what each exercises:
  courts/cases/20261101-104500456.parquet       out-of-order CDC: named after ...103000123 but
                                                its changes are older (same keys) -> apply by change_seq
  prisons/population/manual/..._<day1>.csv      malformed CSV (extra field, unterminated quote) -> file quarantined
  prisons/population/manual/..._<day2>.csv      required column `population` missing -> file quarantined
  prisons/population/resend/..._<day3>.csv      byte copy of an ingested file -> skipped as duplicate (sha256)
  prisons/population/prison_population_<day4>.csv  3 rows with population "lots" -> rows quarantined, rest load
  prisons/population/manual/..._<day5>.csv      unexpected column, drift policy quarantine -> file quarantined
  prisons/population/manual/..._<day6>.csv      empty 0-byte file -> file quarantined
  legal_aid/payments/legal_aid_payments_<mid-month>.parquet  truncated Parquet -> file quarantined
  monitoring/em_events/em_events_<day5>.jsonl   extra nullable field battery_pct, drift evolve -> loads, column added
  prisons/population/readme.txt, misc/unknown_report.xlsx  match no spec -> reported as unmatched, left alone
Subfolders under a location are ordinary: patterns match a file's base name.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import posixpath
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from itertools import accumulate, count
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from quayside.specs import DatasetSpec, load_spec

if TYPE_CHECKING:
    from quayside.lake import Lake

DATASETS_DIR = Path(__file__).resolve().parent.parent / "lake_assets" / "datasets"
DEMO_SPECS = ("courts/cases", "courts/hearings", "courts/defendants", "courts/court_register",
              "prisons/population", "legal_aid/payments", "monitoring/em_events")
UNMATCHED = "unmatched"


@dataclass(frozen=True)
class BadFile:
    dataset: str | None  # spec key, None when no spec matches the file
    key: str             # landing key
    problem: str
    expected: str        # what Quayside should do with it


@dataclass
class DemoSummary:
    files: dict[str, list[str]] = field(default_factory=dict)  # dataset key (or "unmatched") -> landing keys
    rows: dict[str, int] = field(default_factory=dict)  # data rows in deliveries that should load (CDC: every record)
    current_rows: dict[str, int] = field(default_factory=dict)  # rows the staged table should hold (CDC: live keys)
    bad_files: list[BadFile] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total_files(self) -> int:
        return sum(len(keys) for keys in self.files.values())

    def as_dict(self) -> dict:
        return asdict(self) | {"total_files": self.total_files}


# --- byte writers ---------------------------------------------------------------------------
def _arrow_type(column_type: str) -> pa.DataType:
    if column_type.startswith("decimal("):
        p, s = column_type[8:-1].split(",")
        return pa.decimal128(int(p), int(s))
    return {"string": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_(),
            "date": pa.date32(), "timestamp": pa.timestamp("us"),
            "timestamptz": pa.timestamp("us", tz="UTC")}[column_type]


def _schema(spec: DatasetSpec, *leading: pa.Field) -> pa.Schema:
    return pa.schema([*leading, *(pa.field(c.name, _arrow_type(c.type), c.nullable) for c in spec.columns)])


def _parquet(rows: list[dict], schema: pa.Schema) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), sink)
    return sink.getvalue().to_pybytes()


def _csv(header: list[str], rows: list[list]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue().encode("utf-8")


class _Out:
    """Writes landing files and keeps the summary."""

    def __init__(self, lake: Lake, summary: DemoSummary):
        self.lake, self.summary = lake, summary

    def put(self, spec: DatasetSpec | None, name: str, data: bytes, rows: int = 0,
            problem: str = "", expected: str = "") -> str:
        key = posixpath.join(spec.source.location, name) if spec else name
        self.lake.landing.write(key, data)
        dataset = spec.key if spec else UNMATCHED
        self.summary.files.setdefault(dataset, []).append(key)
        if spec:
            self.summary.rows[dataset] = self.summary.rows.get(dataset, 0) + rows
        if problem:
            self.summary.bad_files.append(BadFile(spec.key if spec else None, key, problem, expected))
        return key


# --- AWS DMS replay -------------------------------------------------------------------------
class _Live:
    """Current rows of a source table by primary key, with O(1) random pick and delete."""

    def __init__(self, pk: str, rows: list[dict]):
        self.pk, self.rows = pk, {r[pk]: r for r in rows}
        self.keys = list(self.rows)
        self.pos = {k: i for i, k in enumerate(self.keys)}

    def pick(self, rng: random.Random) -> str:
        return self.keys[rng.randrange(len(self.keys))]

    def put(self, row: dict) -> None:
        key = row[self.pk]
        if key not in self.rows:
            self.pos[key] = len(self.keys)
            self.keys.append(key)
        self.rows[key] = row

    def drop(self, key: str) -> dict:
        i, last = self.pos.pop(key), self.keys.pop()
        if last != key:
            self.keys[i], self.pos[last] = last, i
        return self.rows.pop(key)


Change = tuple[str, datetime, str, dict]  # (Op, extraction timestamp, change_seq, row image)


class _Dms:
    """Replays one source table as DMS writes it: LOAD files, then change files named by write time."""

    def __init__(self, out: _Out, spec: DatasetSpec, rows: list[dict], seq: Iterator[int]):
        self.out, self.spec, self.seq = out, spec, seq
        self.live = _Live(spec.primary_key[0], rows)
        cdc = spec.cdc
        self.meta = [pa.field(cdc.timestamp_column, pa.timestamp("us")), pa.field(cdc.sequence_column, pa.string())]
        self.op_field = pa.field(cdc.op_column, pa.string())

    def full_load(self, at: datetime, rows: list[dict], per_file: int) -> None:
        ts, sq = self.spec.cdc.timestamp_column, self.spec.cdc.sequence_column
        schema = _schema(self.spec, *self.meta)  # no Op column in full-load files, change_seq null
        for i in range(math.ceil(len(rows) / per_file)):
            chunk = [{ts: at, sq: None, **r} for r in rows[i * per_file:(i + 1) * per_file]]
            self.out.put(self.spec, f"LOAD{i + 1:08d}.parquet", _parquet(chunk, schema), len(chunk))

    def changes(self, rng: random.Random, n: int, start: datetime, end: datetime,
                new: Callable[[datetime], dict], update: Callable[[dict, datetime], dict],
                mix: tuple[float, float] = (0.45, 0.45), prefer: list[str] = ()) -> list[Change]:
        """n changes between start and end, in time order; `prefer` keys are updated first."""
        span = (end - start).total_seconds()
        times = sorted(start + timedelta(microseconds=int(rng.random() * span * 1e6)) for _ in range(n))
        prefer, out = [k for k in prefer if k in self.live.rows], []
        for ts in times:
            r = rng.random()
            if prefer:
                op, row = "U", update(self.live.rows[prefer.pop(0)], ts)
            elif r < mix[0] or not self.live.keys:
                op, row = "I", new(ts)
            elif r < mix[0] + mix[1]:
                op, row = "U", update(self.live.rows[self.live.pick(rng)], ts)
            else:
                op, row = "D", self.live.drop(self.live.pick(rng))  # DMS deletes carry the before-image
            if op != "D":
                self.live.put(row)
            out.append((op, ts, f"{ts:%Y%m%d%H%M%S}{next(self.seq):018d}", row))
        return out

    def write(self, name_time: datetime, changes: list[Change]) -> str:
        cdc = self.spec.cdc
        schema = _schema(self.spec, self.op_field, *self.meta)
        rows = [{cdc.op_column: op, cdc.timestamp_column: ts, cdc.sequence_column: sq, **r}
                for op, ts, sq, r in changes]
        name = f"{name_time:%Y%m%d-%H%M%S}{name_time.microsecond // 1000:03d}.parquet"
        return self.out.put(self.spec, name, _parquet(rows, schema), len(rows))

    def finish(self) -> None:
        self.out.summary.current_rows[self.spec.key] = len(self.live.rows)


# --- the courts database (DMS) --------------------------------------------------------------
def _weights(weights: dict[str, int]) -> tuple[list[str], list[int]]:
    """(choices, cumulative weights) for a fast `_pick`."""
    return list(weights), list(accumulate(weights.values()))


COURTS = [f"CC{n:03d}" for n in range(401, 413)] + [f"MC{n:03d}" for n in range(101, 125)]
OFFENCES = _weights({"violence_against_the_person": 22, "sexual_offences": 5, "robbery": 3, "theft": 18, "burglary": 6,
            "criminal_damage": 6, "drug_offences": 12, "possession_of_weapons": 4, "public_order": 8,
            "fraud": 5, "motoring": 9, "other": 2})
OPEN_STATUSES = _weights({"received": 2, "listed": 5, "adjourned": 2, "in_trial": 1})
HEARING_TYPES = _weights({"first_appearance": 25, "plea": 15, "bail_application": 8, "mention": 20, "trial": 12,
                          "sentencing": 15, "appeal": 5})
OUTCOMES = _weights({"effective": 60, "adjourned": 22, "vacated": 8, "ineffective": 7, "warrant_issued": 3})
CUSTODY = _weights({"bail": 60, "remanded_in_custody": 15, "summons": 20, "released_under_investigation": 5})
FIRST_NAMES = ["Oliver", "Amelia", "Jack", "Olivia", "Harry", "Isla", "Jacob", "Emily", "Charlie", "Poppy",
               "Thomas", "Ava", "George", "Jessica", "Oscar", "Lily", "James", "Sophie", "William", "Grace",
               "Mohammed", "Aisha", "Daniel", "Chloe", "Liam", "Megan", "Ryan", "Zara", "Connor", "Priya"]
LAST_NAMES = ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies", "Robinson",
              "Wright", "Thompson", "Evans", "Walker", "White", "Roberts", "Green", "Hall", "Wood", "Jackson",
              "Clarke", "Patel", "Khan", "Lewis", "James", "Phillips", "Mason", "Mitchell", "Rose", "Davis", "Hughes"]
POSTCODE_AREAS = ["B", "BS", "CF", "CV", "E", "EX", "L", "LE", "LS", "M", "N", "NE", "NG", "NW", "OX", "PL",
                  "S", "SE", "SW", "W"]
POSTCODE_UNIT = "ABDEFGHJLNPQRSTUWXYZ"


def _pick(rng: random.Random, weights: tuple[list[str], list[int]]) -> str:
    return rng.choices(weights[0], cum_weights=weights[1])[0]


def _at(day: date, seconds: float) -> datetime:
    return datetime.combine(day, datetime.min.time()) + timedelta(seconds=int(seconds))


def _courts(out: _Out, specs: dict[str, DatasetSpec], seed: int, scale: float, end: date) -> list[str]:
    """Cases, hearings and defendants from one case-management DB; returns the live case ids."""
    rng = random.Random(f"{seed}:courts")
    seq = count(1)  # one change stream (AR_H_CHANGE_SEQ) for the whole source database
    full_load_at = _at(end - timedelta(days=2), 3600)
    per_file = max(1, round(1000 * scale))
    case_no, hearing_no, defendant_no = count(10_000_001), count(100_000_001), count(10_000_001)

    # cases: ids increase with received_date; older cases are mostly disposed by the full load
    first, last_day = date(2023, 1, 1), full_load_at.date()
    received = sorted(first + timedelta(days=rng.randrange((last_day - first).days)) for _ in range(_n(2000, scale)))
    cases = []
    for day in received:
        disposal = day + timedelta(days=int(rng.gammavariate(2.0, 90)))
        row = {"case_id": f"C{next(case_no):08d}", "court_code": rng.choice(COURTS),
               "offence_type": _pick(rng, OFFENCES), "received_date": day}
        if disposal < last_day:
            row |= {"disposal_date": disposal, "status": "disposed" if rng.random() < 0.9 else "withdrawn",
                    "updated_at": _at(disposal, rng.uniform(9 * 3600, 18 * 3600))}
        else:
            age = (full_load_at - _at(day, 0)).total_seconds()
            row |= {"disposal_date": None, "status": _pick(rng, OPEN_STATUSES),
                    "updated_at": _at(day, rng.uniform(9 * 3600, 9 * 3600 + age - 10 * 3600))}
        cases.append(row)

    def new_case(ts: datetime) -> dict:
        return {"case_id": f"C{next(case_no):08d}", "court_code": rng.choice(COURTS),
                "offence_type": _pick(rng, OFFENCES), "received_date": ts.date(), "disposal_date": None,
                "status": "received", "updated_at": ts}

    def update_case(row: dict, ts: datetime) -> dict:
        nxt = {"received": "listed", "listed": rng.choice(["in_trial", "adjourned", "disposed"]),
               "adjourned": "listed", "in_trial": "disposed"}.get(row["status"])
        if nxt is None:  # closed case: a data-quality correction of the offence group
            return row | {"offence_type": _pick(rng, OFFENCES), "updated_at": ts}
        if rng.random() < 0.05:
            nxt = "withdrawn"
        final = nxt in ("disposed", "withdrawn")
        return row | {"status": nxt, "disposal_date": ts.date() if final else None, "updated_at": ts}

    dms = _Dms(out, specs["courts/cases"], cases, seq)
    dms.full_load(full_load_at, cases, per_file)
    t = [full_load_at + timedelta(minutes=5), _at(end - timedelta(days=1), 6 * 3600),
         _at(end, 10 * 3600 + 20 * 60), _at(end, 10 * 3600 + 30 * 60)]
    w1 = dms.changes(rng, _n(300, scale), t[0], t[1], new_case, update_case)
    w2 = dms.changes(rng, _n(200, scale), t[1], t[2], new_case, update_case)
    touched = list(dict.fromkeys(r["case_id"] for op, _, _, r in w2 if op != "D"))[:_n(20, scale)]
    w3 = dms.changes(rng, _n(100, scale), t[2], t[3], new_case, update_case, prefer=touched)
    dms.write(t[1] + timedelta(milliseconds=412), w1)
    on_time = dms.write(t[3] + timedelta(milliseconds=123), w3)
    late = dms.write(t[3] + timedelta(minutes=15, milliseconds=456), w2)
    out.summary.bad_files.append(BadFile(
        dms.spec.key, late, f"delivered out of order: named after {posixpath.basename(on_time)} but its "
        f"{len(w2)} changes (I/U/D) are older; {len(touched)} of its cases change again in that file",
        "load; apply changes by change_seq so the newer file's values win"))
    dms.finish()
    case_ids = [c["case_id"] for c in cases]
    case_court = {c["case_id"]: c["court_code"] for c in cases}

    # hearings: between receipt and disposal (or up to 90 days ahead); past ones have an outcome
    hearings = []
    for _ in range(_n(5000, scale)):
        case = cases[rng.randrange(len(cases))]
        until = case["disposal_date"] or last_day + timedelta(days=90)
        day = case["received_date"] + timedelta(days=rng.randrange(max(1, (until - case["received_date"]).days)))
        past = day < last_day
        hearings.append({"case_id": case["case_id"], "court_code": case["court_code"],
                         "courtroom": f"Court {rng.randint(1, 12)}" if past or rng.random() < 0.8 else None,
                         "hearing_date": day, "hearing_type": _pick(rng, HEARING_TYPES),
                         "outcome": _pick(rng, OUTCOMES) if past else None,
                         "updated_at": _at(day, rng.uniform(16 * 3600, 19 * 3600)) if past
                         else _at(case["received_date"], rng.uniform(9 * 3600, 17 * 3600))})
    hearings.sort(key=lambda h: (h["hearing_date"], h["case_id"]))
    hearings = [{"hearing_id": f"H{next(hearing_no):09d}", **h} for h in hearings]

    def new_hearing(ts: datetime) -> dict:
        case_id = rng.choice(case_ids)
        return {"hearing_id": f"H{next(hearing_no):09d}", "case_id": case_id, "court_code": case_court[case_id],
                "courtroom": None, "hearing_date": ts.date() + timedelta(days=rng.randint(7, 90)),
                "hearing_type": _pick(rng, HEARING_TYPES), "outcome": None, "updated_at": ts}

    def update_hearing(row: dict, ts: datetime) -> dict:
        if row["outcome"] is None and row["hearing_date"] <= ts.date():
            return row | {"outcome": _pick(rng, OUTCOMES), "updated_at": ts}
        if row["outcome"] is None:  # listing finalised or moved
            return row | {"courtroom": f"Court {rng.randint(1, 12)}", "updated_at": ts,
                          "hearing_date": row["hearing_date"] + timedelta(days=rng.choice([0, 0, 7, 14]))}
        return row | {"outcome": _pick(rng, OUTCOMES), "updated_at": ts}  # resulting corrected

    dms = _Dms(out, specs["courts/hearings"], hearings, seq)
    dms.full_load(full_load_at, hearings, per_file)
    dms.write(t[1] + timedelta(milliseconds=87),
              dms.changes(rng, _n(400, scale), t[0], t[1], new_hearing, update_hearing, mix=(0.5, 0.4)))
    dms.write(_at(end, 6 * 3600) + timedelta(milliseconds=502),
              dms.changes(rng, _n(300, scale), t[1], _at(end, 6 * 3600), new_hearing, update_hearing, mix=(0.5, 0.4)))
    dms.finish()

    # defendants: personal data; one or two per case
    def defendant(case_id: str, received: date, ts: datetime) -> dict:
        return {"defendant_id": f"D{next(defendant_no):08d}", "case_id": case_id,
                "first_name": rng.choice(FIRST_NAMES), "last_name": rng.choice(LAST_NAMES),
                "date_of_birth": received - timedelta(days=rng.randint(18 * 365, 70 * 365))
                if rng.random() < 0.97 else None,
                "postcode": _postcode(rng) if rng.random() < 0.95 else None,
                "custody_status": _pick(rng, CUSTODY), "updated_at": ts}

    defendants = []
    for i in range(_n(2000, scale)):
        case = cases[i % len(cases)] if i < 0.9 * len(cases) else cases[rng.randrange(len(cases))]
        defendants.append(defendant(case["case_id"], case["received_date"], min(case["updated_at"], full_load_at)))

    def update_defendant(row: dict, ts: datetime) -> dict:
        if rng.random() < 0.5:
            return row | {"postcode": _postcode(rng), "updated_at": ts}  # moved house
        return row | {"custody_status": _pick(rng, CUSTODY), "updated_at": ts}

    dms = _Dms(out, specs["courts/defendants"], defendants, seq)
    dms.full_load(full_load_at, defendants, per_file)
    def new_defendant(ts: datetime) -> dict:
        return defendant(rng.choice(case_ids), ts.date(), ts)

    dms.write(_at(end, 6 * 3600) + timedelta(milliseconds=251),
              dms.changes(rng, _n(150, scale), t[0], _at(end, 6 * 3600), new_defendant, update_defendant,
                          mix=(0.3, 0.65)))
    dms.finish()
    return case_ids


REGIONS = ["London", "South East", "South West", "Midlands", "North East", "North West", "Wales"]


def _court_register(out: _Out, spec: DatasetSpec, seed: int, end: date) -> None:
    """Two weekly snapshots of the register; the newest court (last code) opens between them."""
    rng = random.Random(f"{seed}:court_register")
    towns = rng.sample([a + b for a in PRISON_PARTS[0] for b in PRISON_PARTS[1]], len(COURTS))
    rows = []
    for code, town in zip(COURTS, towns):
        crown = code.startswith("CC")
        opened = (date(1970, 1, 1) + timedelta(days=rng.randrange(18_000))).isoformat() if rng.random() < 0.9 else ""
        rows.append([code, f"{town} Crown Court" if crown else f"{town} Magistrates' Court",
                     "crown" if crown else "magistrates", rng.choice(REGIONS), opened])
    header = [c.name for c in spec.columns]
    opened = end - timedelta(days=3)
    rows[-1][4] = opened.isoformat()
    for week_end, register in ((end - timedelta(days=7), rows[:-1]), (end, rows)):
        out.put(spec, f"court_register_{week_end}.csv", _csv(header, register), len(register))
    out.summary.current_rows[spec.key] = len(rows)


def _postcode(rng: random.Random) -> str:
    return (f"{rng.choice(POSTCODE_AREAS)}{rng.randint(1, 20)} {rng.randint(0, 9)}"
            f"{rng.choice(POSTCODE_UNIT)}{rng.choice(POSTCODE_UNIT)}")


# --- prisons: daily CSV from a supplier -----------------------------------------------------
PRISON_PARTS = (["Ash", "Bram", "Carn", "Dun", "Elm", "Fen", "Gar", "Hal", "Ing", "Kel", "Lang", "Mar", "Nor",
                 "Oak", "Pen", "Ray", "Stan", "Thorn", "Ul", "Wen", "Whit", "Bar", "Chel", "Dor", "Hen", "Kirk",
                 "Lin", "Mel", "Rud", "Sud"],
                ["ford", "ley", "moor", "wood", "field", "ton", "by", "well", "stead", "bury", "ham", "brook"])
CATEGORIES = {"A": (5, 500, 900), "B": (20, 600, 1700), "C": (45, 400, 1200), "D": (10, 200, 600),
              "YOI": (8, 100, 500), "Female": (12, 150, 600)}  # weight, capacity range


def _prisons(out: _Out, spec: DatasetSpec, seed: int, scale: float, days: list[date]) -> None:
    rng = np.random.default_rng([seed, 4])
    n = min(26 ** 3, max(5, _n(120, scale)))
    codes = sorted("".join(chr(65 + (c // 26 ** k) % 26) for k in (2, 1, 0))
                   for c in rng.choice(26 ** 3, n, replace=False))
    combos = [a + b for a in PRISON_PARTS[0] for b in PRISON_PARTS[1]]
    names = [combos[i % len(combos)] + (f" {i // len(combos) + 1}" if i >= len(combos) else "")
             for i in rng.permutation(max(n, len(combos)))[:n]]
    cats = list(CATEGORIES)
    cat = rng.choice(cats, n, p=np.array([v[0] for v in CATEGORIES.values()]) / sum(v[0] for v in CATEGORIES.values()))
    est = []
    for code, name, c in zip(codes, names, cat.tolist()):
        title = f"HMP & YOI {name}" if c == "YOI" else f"HMP {name}" + (", North" if rng.random() < 0.08 else "")
        est.append((code, title, int(rng.integers(CATEGORIES[c][1], CATEGORIES[c][2])), c))
    occupancy = rng.uniform(0.86, 1.04, n) + np.cumsum(rng.normal(0, 0.004, (len(days), n)), axis=0)
    header = [c.name for c in spec.columns]

    def rows_of(d: int, k: int = n) -> list[list]:
        return [[days[d].isoformat(), code, title, int(round(cap * occ)), cap, c]
                for (code, title, cap, c), occ in zip(est[:k], occupancy[d])]

    files: list[bytes] = []
    for d, day in enumerate(days):
        rows, bad = rows_of(d), []
        if d == 3 % len(days):
            bad = sorted(rng.choice(n, 3, replace=False).tolist())
            for i in bad:
                rows[i][3] = "lots"
        files.append(_csv(header, rows))
        out.put(spec, f"prison_population_{day}.csv", files[-1], n - len(bad),
                f"population is 'lots' on lines {[i + 2 for i in bad]}" if bad else "",
                "quarantine those 3 rows, load the others")
    out.summary.current_rows[spec.key] = out.summary.rows[spec.key]

    def name(i: int, folder: str = "manual") -> str:  # with fewer than 6 days, keep manual uploads apart
        return f"{folder}/{'' if len(days) >= 6 else f'{i}/'}prison_population_{days[i % len(days)]}.csv"

    text = _csv(header, rows_of(0, 10)).decode()
    text += f'{days[0]},ZZZ,HMP Extra,512,600,B,unexpected\n{days[0]},"ZZY,HMP Unclosed,300,350,C\n'
    out.put(spec, name(0), text.encode(), 0,
            "malformed CSV: a row with 7 fields and an unterminated quote", "quarantine the file")
    out.put(spec, name(1),
            _csv([h for h in header if h != "population"], [r[:3] + r[4:] for r in rows_of(1 % len(days))]), 0,
            "required column population is missing", "quarantine the file")
    out.put(spec, name(2, "resend"), files[2 % len(days)], 0,
            f"byte-for-byte copy of prison_population_{days[2 % len(days)]}.csv sent again",
            "skip: same sha256 as a file already ingested")
    out.put(spec, name(4),
            _csv(header + ["certified_normal_accommodation"], [r + [r[4] - 25] for r in rows_of(4 % len(days))]), 0,
            "unexpected column certified_normal_accommodation (schema_drift: quarantine)", "quarantine the file")
    out.put(spec, name(5), b"", 0, "empty 0-byte file", "quarantine the file")
    out.put(None, "prisons/population/readme.txt",
            b"Daily prison population feed. One CSV per day; counts taken at midnight.\n", 0,
            "matches no dataset pattern (a supplier's readme)", "ignore; report as unmatched")


# --- legal aid: monthly Parquet -------------------------------------------------------------
LEGAL_AID = {"crime": (45, 350.0), "civil": (20, 600.0), "family": (20, 800.0), "immigration": (8, 500.0),
             "mental_health": (7, 400.0)}  # weight, median payment (GBP)


def _legal_aid(out: _Out, spec: DatasetSpec, seed: int, scale: float, end: date, case_ids: list[str]) -> None:
    rng = np.random.default_rng([seed, 5])
    providers: set[str] = set()
    while len(providers) < max(10, _n(400, scale)):
        d, a, b = rng.integers(0, 10), rng.integers(0, 26, 2), rng.integers(0, 1000)
        providers.add(f"{d}{chr(65 + a[0])}{b:03d}{chr(65 + a[1])}")
    provider_ids = sorted(providers)
    cats = list(LEGAL_AID)
    weights = np.array([v[0] for v in LEGAL_AID.values()], float)
    payment_no = count(10_000_001)
    schema = _schema(spec)

    def payments(first: date, last: date, n: int) -> list[dict]:
        workdays = [first + timedelta(days=i) for i in range((last - first).days + 1)
                    if (first + timedelta(days=i)).weekday() < 5]
        when = np.sort(rng.integers(0, len(workdays), n))
        cat = rng.choice(len(cats), n, p=weights / weights.sum())
        medians = np.array([LEGAL_AID[c][1] for c in cats])[cat]
        pennies = np.round(np.exp(rng.normal(np.log(medians), 0.9)) * 100).astype(np.int64)
        linked = rng.random(n) < 0.6
        prov = rng.integers(0, len(provider_ids), n)
        case = rng.integers(0, len(case_ids), n)
        return [{"payment_id": f"PAY{next(payment_no):08d}", "payment_date": workdays[w],
                 "provider_id": provider_ids[p], "category": cats[c], "amount": Decimal(int(m)).scaleb(-2),
                 "case_reference": case_ids[k] if cats[c] == "crime" and ln else None}
                for w, c, m, ln, p, k in zip(when.tolist(), cat.tolist(), pennies.tolist(), linked.tolist(),
                                             prov.tolist(), case.tolist())]

    delivered = end.replace(day=1)
    previous = (delivered - timedelta(days=1)).replace(day=1)
    for file_day in (previous, delivered):
        month_end = file_day - timedelta(days=1)
        rows = payments(month_end.replace(day=1), month_end, _n(3000, scale))
        out.put(spec, f"legal_aid_payments_{file_day}.parquet", _parquet(rows, schema), len(rows))
    out.summary.current_rows[spec.key] = out.summary.rows[spec.key]
    mid = previous + timedelta(days=14)
    whole = _parquet(payments(previous, mid - timedelta(days=1), _n(150, scale)), schema)
    out.put(spec, f"legal_aid_payments_{mid}.parquet", whole[: len(whole) // 2], 0,
            f"truncated Parquet: the first {len(whole) // 2} of {len(whole)} bytes of a mid-month run",
            "quarantine the file")


# --- electronic monitoring: daily JSON lines ------------------------------------------------
EM_EVENTS = {"strap_ok": 40, "curfew_start": 20, "curfew_end": 20, "battery_low": 10, "violation": 7, "tamper": 3}


def _em_events(out: _Out, spec: DatasetSpec, seed: int, scale: float, days: list[date]) -> None:
    rng = np.random.default_rng([seed, 6])
    subjects = max(10, _n(700, scale))
    pseudonym = [hashlib.sha256(f"{seed}:subject:{i}".encode()).hexdigest()[:12] for i in range(subjects)]
    subject_ids = np.array([f"S{h}" for h in pseudonym])
    device_ids = np.array([f"EM{v:06d}" for v in rng.choice(900_000, subjects, replace=False) + 100_000])
    home_lat, home_lon = rng.uniform(50.6, 54.4, subjects), rng.uniform(-3.4, 0.4, subjects)
    types = np.array(list(EM_EVENTS))
    p = np.array(list(EM_EVENTS.values()), float)
    event_no = 1
    drift_day = 4 % len(days)
    for d, day in enumerate(days):
        n = _n(5000, scale)
        who = rng.integers(0, subjects, n)
        kind = types[rng.choice(len(types), n, p=p / p.sum())]
        spread = np.where(kind == "violation", 0.02, 0.0004)
        lat = np.round(home_lat[who] + rng.normal(0, 1, n) * spread, 5)
        lon = np.round(home_lon[who] + rng.normal(0, 1, n) * spread, 5)
        when = np.datetime_as_string(np.datetime64(day, "ms") + np.sort(rng.integers(0, 86_400_000, n)), unit="ms")
        fields = zip(subject_ids[who].tolist(), device_ids[who].tolist(), when.tolist(), kind.tolist(),
                     lat.tolist(), lon.tolist())
        lines = [f'{{"event_id":"EV{event_no + i:010d}","subject_id":"{s}","device_id":"{dv}","event_time":"{t}Z",'
                 f'"event_type":"{k}","latitude":{la:.5f},"longitude":{lo:.5f}'
                 for i, (s, dv, t, k, la, lo) in enumerate(fields)]
        event_no += n
        name = f"em_events_{day}.jsonl"
        if d == drift_day:  # the supplier's firmware upgrade starts reporting battery level
            battery = np.where(kind == "battery_low", rng.integers(3, 15, n), rng.integers(15, 101, n)).tolist()
            lines = [f'{line},"battery_pct":{"null" if k == "tamper" else b}}}'
                     for line, k, b in zip(lines, kind.tolist(), battery)]
            out.put(spec, name, ("\n".join(lines) + "\n").encode(), n,
                    "unexpected nullable field battery_pct (schema_drift: evolve)", "load; add column battery_pct")
        else:
            out.put(spec, name, ("\n".join(line + "}" for line in lines) + "\n").encode(), n)
    out.summary.current_rows[spec.key] = out.summary.rows[spec.key]


# --- entry point ----------------------------------------------------------------------------
def _n(base: int, scale: float) -> int:
    return max(1, round(base * scale))


def demo_specs(folder: Path = DATASETS_DIR) -> dict[str, DatasetSpec]:
    """The demo specs by '<domain>/<name>'."""
    return {name: load_spec(folder / f"{name}.yaml") for name in DEMO_SPECS}


def generate(lake: Lake, scale: float = 1.0, seed: int = 7, days: int = 7,
             end: date = date(2026, 11, 1)) -> DemoSummary:
    """Write the demo tenant's landing files (overwriting earlier demo files; nothing is deleted)."""
    if scale <= 0 or days < 1:
        raise ValueError("scale must be > 0 and days >= 1")
    started = time.perf_counter()
    specs = demo_specs()
    summary = DemoSummary()
    out = _Out(lake, summary)
    window = [end - timedelta(days=days - 1 - i) for i in range(days)]
    case_ids = _courts(out, specs, seed, scale, end)
    _court_register(out, specs["courts/court_register"], seed, end)
    _prisons(out, specs["prisons/population"], seed, scale, window)
    _legal_aid(out, specs["legal_aid/payments"], seed, scale, end, case_ids)
    _em_events(out, specs["monitoring/em_events"], seed, scale, window)
    out.put(None, "misc/unknown_report.xlsx", b"PK\x05\x06" + bytes(18), 0,
            "matches no dataset (an empty spreadsheet someone dropped at the landing root)",
            "ignore; report as unmatched")
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary
