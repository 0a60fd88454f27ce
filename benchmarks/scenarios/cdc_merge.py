"""Scenario 3: CDC — DMS changes (I/U/D) merged into a current-state table (plus SCD2 history).

The table: `id` (primary key, grows with `created_date`), `created_date` (partition by month,
~5 years), `status`, `amount`, `updated_at`. Changes are ~70% U, 20% I (new keys), 10% D.
'skewed': 90% of U/D hit rows created in the last 60 days (as in real CDC), the rest any row;
'uniform': any row. Quayside: `quayside.cdc.apply_changes` (current + history). Peer: pyiceberg
`upsert` of each key's latest version plus a delete of deleted keys (current table only). Limit:
DuckDB anti-join + rewrite of the touched month partitions of a Parquet dataset, without Iceberg.
Every run starts from the same baseline (the SQLite catalog is restored).
"""

from __future__ import annotations

import shutil
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from benchmarks.harness import Row, compare
from quayside.specs import DatasetSpec

START = date(2021, 1, 1)
DAYS = 5 * 365
RECENT_DAYS = 60
STATUSES = np.array(["open", "pending", "closed", "cancelled", "on_hold"])
INGESTED = datetime(2026, 1, 2, tzinfo=timezone.utc)

SPEC = DatasetSpec.model_validate({
    "name": "orders", "domain": "bench", "description": "benchmark table", "owner": "team:bench",
    "source": {"location": "bench/orders/", "pattern": r".*\.parquet", "format": "parquet"},
    "columns": [{"name": "id", "type": "int"}, {"name": "created_date", "type": "date"},
                {"name": "status", "type": "string"}, {"name": "amount", "type": "float"},
                {"name": "updated_at", "type": "timestamp"}],
    "primary_key": ["id"],
    "partitioning": {"column": "created_date", "granularity": "month", "start": START.isoformat()},
    "load_mode": "cdc",
})


# --- data -----------------------------------------------------------------------------
def created_date_of(ids: np.ndarray, rows: int) -> np.ndarray:
    """Ids grow with creation date, as auto-increment keys do: the date is a function of the id."""
    day = np.minimum(ids, rows - 1) * DAYS // rows
    return (np.datetime64(START) + day.astype("timedelta64[D]")).astype("datetime64[D]")


def change_table(ids: np.ndarray, created: np.ndarray, ops: np.ndarray, cdc_ts: np.ndarray,
                 seq: list[str] | None, source: str, rng: np.random.Generator) -> pa.Table:
    n = len(ids)
    updated = cdc_ts.astype("datetime64[us]")
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "created_date": pa.array(created, pa.date32()),
        "status": pa.array(STATUSES[rng.integers(0, len(STATUSES), n)], pa.string()),
        "amount": pa.array(np.round(rng.random(n) * 1000, 2), pa.float64()),
        "updated_at": pa.array(updated, pa.timestamp("us")),
        "_source_file": pa.array([source] * n, pa.string()),
        "_batch_date": pa.array([INGESTED.date()] * n, pa.date32()),
        "_ingested_at": pa.array([INGESTED] * n, pa.timestamp("us", tz="UTC")),
        "_op": pa.array(ops, pa.string()),
        "_cdc_ts": pa.array(updated, pa.timestamp("us")),
        "_cdc_seq": pa.array(seq, pa.string()) if seq is not None else pa.nulls(n, pa.string()),
    })


def baseline_rows(rows: int, rng: np.random.Generator) -> pa.Table:
    ids = np.arange(rows, dtype=np.int64)
    created = created_date_of(ids, rows)
    ts = created.astype("datetime64[us]") + rng.integers(0, 86_400_000_000, rows).astype("timedelta64[us]")
    return change_table(ids, created, np.full(rows, "I"), ts, None, "LOAD00000001.parquet", rng)


def make_changes(rows: int, count: int, distribution: str, recent_share: float, rng: np.random.Generator) -> pa.Table:
    inserts = count * 20 // 100
    hits = count - inserts
    if distribution == "skewed":
        recent_from = rows * (DAYS - RECENT_DAYS) // DAYS
        recent = rng.random(hits) < recent_share
        targets = np.where(recent, rng.integers(recent_from, rows, hits), rng.integers(0, rows, hits))
    else:
        targets = rng.integers(0, rows, hits)
    ops = np.where(rng.random(hits) < 70 / 80, "U", "D")
    new_ids = np.arange(rows, rows + inserts, dtype=np.int64)
    ids = np.concatenate([targets, new_ids])
    today = np.datetime64(START + timedelta(DAYS - 1))
    created = np.concatenate([created_date_of(targets, rows), np.full(inserts, today)])
    all_ops = np.concatenate([ops, np.full(inserts, "I")])
    after = np.datetime64(START + timedelta(DAYS), "us")
    cdc_ts = after + rng.integers(0, 86_400_000_000, count).astype("timedelta64[us]")
    seq = [f"{i:020d}" for i in range(count)]
    return change_table(ids, created, all_ops, cdc_ts, seq, "cdc/20260102-000001.parquet", rng)



# --- baselines ----------------------------------------------------------------------------
def build_baseline(root: Path, rows: int) -> Path:
    """A lake with the tables at `rows` rows (catalog saved for resets) and the same current
    state as a month-partitioned Parquet dataset for the limit. Returns the lake's home."""
    from quayside.cdc import apply_changes
    from quayside.lake import Lake, LakeSettings

    home = root / f"lake-{rows}"
    started = time.perf_counter()
    base = baseline_rows(rows, np.random.default_rng(rows))
    apply_changes(Lake(LakeSettings(home=str(home))), SPEC, base, full_load=True)
    shutil.copy(home / "catalog.db", home / "catalog.baseline.db")
    pq.write_to_dataset(base.select(BASE_COLUMNS).append_column(
        "month", pc.strftime(base["created_date"], "%Y-%m")), home / "parquet-baseline", partition_cols=["month"])
    print(f"  baseline of {rows:,} rows built in {time.perf_counter() - started:.0f} s", flush=True)
    return home


BASE_COLUMNS = ["id", "created_date", "status", "amount", "updated_at"]


# --- contenders (each in a process of its own) --------------------------------------------
def quayside(clock, home: str, changes: str) -> dict:
    from quayside.cdc import apply_changes
    from quayside.lake import Lake, LakeSettings

    data = pq.read_table(changes)
    scan_before = scan_seconds(home)
    clock.start()
    result = apply_changes(Lake(LakeSettings(home=home)), SPEC, data, full_load=False)
    clock.stop()
    # Merge-on-read moves work to readers (they skip deleted positions) until maintenance compacts.
    return {"partitions": result.partitions_touched, "scan_before": scan_before, "scan_after": scan_seconds(home)}


def scan_seconds(home: str) -> float:
    """A DuckDB aggregate over every row of the current table, as an analyst's query would read it."""
    from quayside.lake import Lake, LakeSettings

    con = Lake(LakeSettings(home=home)).connect()
    started = time.perf_counter()
    con.execute(f"SELECT count(*), sum(amount), count(DISTINCT status) FROM {SPEC.staged_namespace}.{SPEC.name}")
    return time.perf_counter() - started


def pyiceberg_upsert(clock, home: str, changes: str) -> dict:
    import warnings

    from pyiceberg.expressions import In

    from quayside.lake import Lake, LakeSettings

    data = pq.read_table(changes)
    table = Lake(LakeSettings(home=home)).load_table(SPEC.staged_namespace, SPEC.name)
    clock.start()
    order = pc.sort_indices(data, [("id", "ascending"), ("_cdc_ts", "descending"), ("_cdc_seq", "descending")])
    ordered = data.take(order)
    first = pc.not_equal(ordered["id"], pa.concat_arrays([pa.array([-1], pa.int64()),
                                                           ordered["id"].combine_chunks()[:-1]]))
    latest = ordered.filter(first)
    deletes = pc.equal(latest["_op"], "D")
    upserts = latest.filter(pc.invert(deletes)).select(table.schema().column_names).cast(table.schema().as_arrow())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table.upsert(upserts, join_cols=["id"])
        table.delete(In("id", latest.filter(deletes)["id"].to_pylist()))
    return {}


def duckdb_rewrite(clock, home: str, changes: str) -> dict:
    """The limit: replace the touched month partitions with (old rows minus changed keys) plus
    each changed key's latest non-deleted version, as plain Parquet."""
    import duckdb

    out = Path(home) / "parquet-out"
    shutil.rmtree(out, ignore_errors=True)
    con = duckdb.connect()
    clock.start()
    con.execute(f"CREATE TEMP TABLE chg AS SELECT * FROM read_parquet('{changes}')")
    con.execute("CREATE TEMP TABLE latest AS SELECT * FROM chg QUALIFY row_number() OVER "
                "(PARTITION BY id ORDER BY _cdc_ts DESC, _cdc_seq DESC) = 1")
    months = [m for (m,) in con.execute("SELECT DISTINCT strftime(created_date, '%Y-%m') FROM chg").fetchall()]
    files = [str(p) for m in months for p in (Path(home) / "parquet-baseline" / f"month={m}").glob("*.parquet")]
    cols = ", ".join(BASE_COLUMNS)
    con.execute(f"""COPY (
        SELECT {cols}, strftime(created_date, '%Y-%m') AS month FROM read_parquet({files!r}) AS old
        WHERE NOT EXISTS (SELECT 1 FROM latest WHERE latest.id = old.id)
        UNION ALL SELECT {cols}, strftime(created_date, '%Y-%m') FROM latest WHERE _op <> 'D'
    ) TO '{out}' (FORMAT parquet, PARTITION_BY (month))""")
    return {"partitions": len(months)}


# --- the scenario --------------------------------------------------------------------------
def run(data: Path, work: Path, quick: bool, repetitions: int) -> dict:
    if quick:
        points = [(50_000, 2_000, "skewed", True), (50_000, 2_000, "uniform", True), (100_000, 2_000, "skewed", False)]
    else:
        points = [(5_000_000, 100_000, "skewed", True), (5_000_000, 100_000, "uniform", True),
                  (5_000_000, 10_000, "skewed", False), (5_000_000, 1_000_000, "skewed", False),
                  (1_000_000, 100_000, "skewed", False), (10_000_000, 100_000, "skewed", False)]
    here = "benchmarks.scenarios.cdc_merge"
    homes, results = {}, {}
    for rows, count, distribution, with_peer in points:
        if rows not in homes:
            homes[rows] = build_baseline(work / "s3", rows)
        home = homes[rows]
        changes = home / f"changes-{count}-{distribution}.parquet"
        pq.write_table(make_changes(rows, count, distribution, 0.9, np.random.default_rng(count)), changes)
        print(f"  {count:,} {distribution} changes into {rows:,} rows", flush=True)

        def reset(name: str, home: Path = home) -> None:
            shutil.copy(home / "catalog.baseline.db", home / "catalog.db")

        arguments = {"home": str(home), "changes": str(changes)}
        contenders = {"quayside": (f"{here}:quayside", arguments), "limit": (f"{here}:duckdb_rewrite", arguments)}
        if with_peer:
            contenders["pyiceberg_upsert"] = (f"{here}:pyiceberg_upsert", arguments)
        results[(rows, count, distribution)] = compare(contenders, repetitions, before_each=reset,
                                                       once=frozenset({"pyiceberg_upsert"}))
    return {"points": [p[:3] for p in points], "figures": results}


def _scan_ratio(figures: dict) -> str:
    extra = figures["quayside"].extra
    return f"{extra['scan_after'] / extra['scan_before']:.2f}" if extra.get("scan_before") else "?"


def report(result: dict, plots: Path) -> list[Row]:
    from lake_assets.metadata import new_figure

    f = {tuple(k): v for k, v in result["figures"].items()}
    rows_list = sorted({r for r, c, d in f if c == 100_000 and d == "skewed"})
    main = max(r for r, c, d in f if d == "uniform")
    count = next(c for r, c, d in f if d == "uniform")
    out = []
    skewed, uniform = f[(main, count, "skewed")], f[(main, count, "uniform")]
    q = {d: fig["quayside"].seconds for d, fig in (("skewed", skewed), ("uniform", uniform))}
    peer = {d: fig["pyiceberg_upsert"].seconds for d, fig in (("skewed", skewed), ("uniform", uniform))}
    limit = {d: fig["limit"].seconds for d, fig in (("skewed", skewed), ("uniform", uniform))}
    speedup = min(peer[d] / q[d] for d in q)
    out.append(Row(
        "3", f"CDC: {count:,} changes into {main:,} rows (skewed / uniform)",
        f"{q['skewed']:.1f} / {q['uniform']:.1f} s (current + history), RSS "
        f"{skewed['quayside'].peak_rss_mb:,.0f} / {uniform['quayside'].peak_rss_mb:,.0f} MB",
        f"pyiceberg upsert {peer['skewed']:.1f} / {peer['uniform']:.1f} s (current only, one run: minutes each)",
        f"{limit['skewed']:.1f} / {limit['uniform']:.1f} s",
        f"{speedup:.1f}× faster than upsert; {q['skewed'] / limit['skewed']:.1f} / "
        f"{q['uniform'] / limit['uniform']:.1f}× the limit's time",
        "< 10 s both, ≥ 3× faster than upsert", max(q.values()) < 10 and speedup >= 3,
        f"partitions changed (merge-on-read: rows deleted by position, no file rewritten): "
        f"{skewed['quayside'].extra.get('partitions', 0):.0f} (skewed) / "
        f"{uniform['quayside'].extra.get('partitions', 0):.0f} (uniform) of 60; a DuckDB scan of current "
        f"after the merge {_scan_ratio(skewed)} / {_scan_ratio(uniform)}× before it (until maintenance compacts)"))
    if len(rows_list) > 1:
        times = [f[(r, 100_000, "skewed")]["quayside"].seconds for r in rows_list]
        limits = [f[(r, 100_000, "skewed")]["limit"].seconds for r in rows_list]
        growth = times[-1] / times[0]
        out.append(Row(
            "3", f"CDC scaling: 100,000 skewed changes into {' / '.join(f'{r:,}' for r in rows_list)} rows",
            " / ".join(f"{t:.1f}" for t in times) + " s", "—", " / ".join(f"{t:.1f}" for t in limits) + " s",
            f"{growth:.2f}× the time at {rows_list[-1]:,} vs {rows_list[0]:,}",
            f"≤ 1.3× at {rows_list[-1]:,} vs {rows_list[0]:,}", growth <= 1.3))
        fig, ax = new_figure()
        ax.plot(rows_list, times, marker="o", label="Quayside apply_changes")
        ax.plot(rows_list, limits, marker="o", label="limit: DuckDB rewrite of touched partitions")
        ax.set(xscale="log", xlabel="rows in the table", ylabel="seconds",
               title="Scenario 3: 100k skewed changes vs table size")
        ax.legend(fontsize=7)
        fig.savefig(plots / "s3_cdc_scaling.png", dpi=110, bbox_inches="tight")
    counts = sorted(c for r, c, d in f if r == main and d == "skewed")
    if len(counts) > 1:
        times = [f[(main, c, "skewed")]["quayside"].seconds for c in counts]
        out.append(Row(
            "3", f"CDC: {' / '.join(f'{c:,}' for c in counts)} skewed changes into {main:,} rows",
            " / ".join(f"{t:.1f}" for t in times) + " s", "—",
            " / ".join(f"{f[(main, c, 'skewed')]['limit'].seconds:.1f}" for c in counts) + " s",
            " / ".join(f"{f[(main, c, 'skewed')]['quayside'].seconds / f[(main, c, 'skewed')]['limit'].seconds:.1f}"
                       for c in counts) + "× the limit", "—", None))
    return out
