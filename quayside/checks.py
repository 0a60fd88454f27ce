"""Data-quality checks on staged tables. Each returns a `CheckOutcome`; Dagster shows them as asset checks."""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

from quayside.ingest import column_checks, files_for_batches, staged_schema
from quayside.lake import Lake
from quayside.specs import DatasetSpec, sql_literal


@dataclass
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


def _scan(lake: Lake, spec: DatasetSpec, name: str | None = None) -> str | None:
    return lake.scan_sql(spec.staged_namespace, name or spec.name)


def schema_conforms(lake: Lake, spec: DatasetSpec) -> CheckOutcome:
    """Every spec column is in the staged table with the spec's type."""
    table = lake.load_table(spec.staged_namespace, spec.name)
    if table is None:
        return CheckOutcome(False, f"{spec.key}: staged table does not exist yet")
    actual = {f.name: f.type for f in table.schema().as_arrow()}
    problems = []
    for expected in staged_schema(spec):
        if expected.name not in actual:
            problems.append(f"{expected.name}: missing")
        elif not actual[expected.name].equals(expected.type) and not (
                pa_string_like(actual[expected.name]) and pa_string_like(expected.type)):
            problems.append(f"{expected.name}: {actual[expected.name]} (spec says {expected.type})")
    extra = sorted(set(actual) - {f.name for f in staged_schema(spec)})
    return CheckOutcome(not problems, "; ".join(problems) or "all spec columns present with their types",
                        {"problems": problems, "drifted_columns": extra})


def pa_string_like(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def primary_key_unique(lake: Lake, spec: DatasetSpec) -> CheckOutcome:
    scan = _scan(lake, spec)
    if not spec.primary_key:
        return CheckOutcome(True, "no primary key declared")
    if scan is None:
        return CheckOutcome(False, f"{spec.key}: staged table does not exist yet")
    keys = ", ".join(f'"{k}"' for k in spec.primary_key)
    con = lake.connect(views=False)
    dups, sample = con.execute(
        f"SELECT count(*), list({{'key': concat_ws(',', {keys}), 'rows': n}})[1:5] FROM "
        f"(SELECT {keys}, count(*) AS n FROM {scan} GROUP BY ALL HAVING count(*) > 1)").fetchone()
    return CheckOutcome(dups == 0, f"{dups} duplicate key(s) on ({', '.join(spec.primary_key)})",
                        {"duplicate_keys": dups, "sample": str(sample or [])})


def rows_reconcile(lake: Lake, spec: DatasetSpec) -> CheckOutcome:
    """rows in = rows staged + rows quarantined, per file, against the tables themselves."""
    con = lake.connect(views=False)
    loads, qrows, staged = lake.scan_sql("staged", "loads"), lake.scan_sql("quarantine", "rows"), _scan(lake, spec)
    if loads is None or staged is None:
        return CheckOutcome(False, f"{spec.key}: nothing staged yet")
    dataset = sql_literal(spec.key)
    bad_sums = con.execute(f"SELECT count(*) FROM {loads} WHERE dataset = {dataset} AND "
                           "rows_in <> rows_staged + rows_quarantined").fetchone()[0]
    q_counts = f"(SELECT raw_key, count(*) AS n FROM {qrows} WHERE dataset = {dataset} GROUP BY raw_key)" \
        if qrows else "(SELECT NULL::VARCHAR AS raw_key, 0 AS n WHERE false)"
    bad_quarantine = con.execute(
        f"SELECT count(*) FROM {loads} l LEFT JOIN {q_counts} q USING (raw_key) "
        f"WHERE l.dataset = {dataset} AND l.rows_quarantined <> coalesce(q.n, 0)").fetchone()[0]
    bad_staged = 0
    if spec.load_mode != "cdc":  # CDC versions are de-duplicated by the merge; counted in the loads only
        live = [f["raw_key"] for f in files_for_batches(lake, spec, None)] if not spec.daily_partitioned else None
        live_filter = f"AND l.raw_key IN ({', '.join(sql_literal(k) for k in live) or 'NULL'})" if live is not None else ""
        bad_staged = con.execute(
            f"SELECT count(*) FROM {loads} l LEFT JOIN (SELECT _source_file AS raw_key, count(*) AS n FROM {staged} "
            f"GROUP BY 1) s USING (raw_key) WHERE l.dataset = {dataset} AND l.status = 'staged' {live_filter} "
            "AND l.rows_staged <> coalesce(s.n, 0)").fetchone()[0]
    totals = con.execute(f"SELECT coalesce(sum(rows_in), 0), coalesce(sum(rows_staged), 0), "
                         f"coalesce(sum(rows_quarantined), 0) FROM {loads} WHERE dataset = {dataset}").fetchone()
    passed = bad_sums == 0 and bad_quarantine == 0 and bad_staged == 0
    return CheckOutcome(passed, f"rows in {totals[0]} = staged {totals[1]} + quarantined {totals[2]}"
                        if passed else f"{bad_sums + bad_quarantine + bad_staged} file(s) do not reconcile",
                        {"rows_in": int(totals[0]), "rows_staged": int(totals[1]), "rows_quarantined": int(totals[2]),
                         "files_unbalanced": bad_sums, "quarantine_mismatch": bad_quarantine,
                         "staged_mismatch": bad_staged})


def column_rules(lake: Lake, spec: DatasetSpec) -> CheckOutcome:
    """The spec's rules (required, enum, pattern, min/max) hold on every staged row."""
    scan = _scan(lake, spec)
    if scan is None:
        return CheckOutcome(False, f"{spec.key}: staged table does not exist yet")
    counts = []
    for column in spec.columns:
        typed = f'"{column.name}"'
        for condition, _ in column_checks(column, typed, typed):
            counts.append((column.name, condition))
    if not counts:
        return CheckOutcome(True, "no column rules declared")
    con = lake.connect(views=False)
    sql = ", ".join(f"count(*) FILTER (WHERE {cond})" for _, cond in counts)
    result = con.execute(f"SELECT {sql} FROM {scan}").fetchone()
    failures: dict[str, int] = {}
    for (name, _), n in zip(counts, result):
        if n:
            failures[name] = failures.get(name, 0) + n
    return CheckOutcome(not failures, f"rule violations: {failures}" if failures else f"{len(counts)} rules hold",
                        {"violations": failures, "rules": len(counts)})

