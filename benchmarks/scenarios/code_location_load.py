"""Scenario 5: code-location load (`dagster definitions validate`) with 200 dataset specs and dbt projects of 500 / 2,500 models.

Each contender is a code-location file validated in a fresh process, as `dagster definitions
validate -f <file>` does it (imports, definitions, every job and snapshot); its figure is that
process's whole life. Quayside: its code-location entry (`code_location`) over 200 specs (the
demo's 7 and synthetic ones) and Quayside's dbt project grown with synthetic models, its manifest
prepared beforehand by `dbt parse` (as `make install` does; its time is reported apart). Peer:
the same dbt project as the dagster-dbt docs set it up, `DbtProject` + `prepare_if_dev()` +
`@dbt_assets`, loaded under `dagster dev` with no prepared manifest: the load runs `dbt parse`.
Limit: a bare `Definitions` with one asset.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from benchmarks.harness import ROOT, Row, compare

DOMAINS = ["courts", "prisons", "probation", "legal_aid", "monitoring", "tribunals", "youth", "family"]
DAILY_EVERY = 25  # one mart in 25 is a daily (tag:daily) incremental model, as the curated layer has
DEMO_DATASETS = ROOT / "lake_assets" / "datasets"
DEMO_DBT = ROOT / "dbt_project"
# A deployed code location has its modules' bytecode compiled; a shell with PYTHONDONTWRITEBYTECODE
# never gets it and recompiles ~2,000 modules per process. Set-up runs with bytecode written.
WRITE_BYTECODE = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


# --- inputs -----------------------------------------------------------------------------
def spec(i: int) -> dict:
    """A valid dataset spec; one in four of each kind: daily CSV, CDC Parquet, unpartitioned
    Parquet, snapshot CSV."""
    kind = i % 4
    name, domain = f"dataset_{i:03d}", DOMAINS[i % len(DOMAINS)]
    columns = [{"name": "record_id", "type": "string", "nullable": False, "pattern": r"^R\d{8}$",
                "description": "Record reference."},
               {"name": "recorded_on", "type": "date", "nullable": False, "description": "Day of the record."},
               {"name": "updated_at", "type": "timestamp", "description": "Last change in the source."},
               {"name": "status", "type": "string", "enum": ["open", "closed", "pending"]},
               {"name": "amount", "type": "decimal(12,2)", "min": 0},
               {"name": "quantity", "type": "int", "min": 0, "max": 10_000},
               {"name": "contact_name", "type": "string", "pii": True}][:4 + i % 4]
    body = {"name": name, "domain": domain, "description": f"Synthetic dataset {i} of the {domain} domain.",
            "owner": f"team:{domain.replace('_', '-')}-data", "columns": columns, "primary_key": ["record_id"]}
    if kind == 0:
        body |= {"load_mode": "append",
                 "source": {"location": f"{domain}/{name}/", "pattern": name + r"_(?P<date>\d{4}-\d{2}-\d{2})\.csv",
                            "format": "csv"},
                 "partitioning": {"column": "recorded_on", "granularity": "day", "start": "2026-01-01"},
                 "freshness": {"warn_after_hours": 26, "fail_after_hours": 30}}
    elif kind == 1:
        body |= {"load_mode": "cdc", "source": {"location": f"{domain}/{name}/", "pattern": r".*\.parquet",
                                                "format": "parquet"},
                 "partitioning": {"column": "recorded_on", "granularity": "month", "start": "2020-01-01"}}
    elif kind == 2:
        body |= {"load_mode": "append", "source": {"location": f"{domain}/{name}/", "pattern": r".*\.parquet",
                                                   "format": "parquet"}}
    else:
        body |= {"load_mode": "snapshot", "source": {"location": f"{domain}/{name}/", "pattern": name + r"\.csv",
                                                     "format": "csv"},
                 "freshness": {"fail_after_hours": 48}}
    return body


def write_specs(folder: Path, count: int) -> list:
    """The demo tenant's specs (the code location's Python assets read them) and synthetic ones up to `count`."""
    from quayside.specs import load_specs

    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(DEMO_DATASETS, folder)
    for i in range(count - len(load_specs(folder))):
        body = spec(i)
        path = folder / body["domain"] / f"{body['name']}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(body, sort_keys=False))
    return load_specs(folder)  # validates them, as the code location will


def write_dbt_project(folder: Path, specs: list, models: int) -> None:
    """Quayside's dbt project grown to `models` models: sources generated from all the specs (as
    `quayside dbt-sources` does), a staging model per synthetic dataset, then intermediate (60%)
    and mart (40%) models each reading 1-3 earlier ones: a DAG. Marts have tests (asset checks in
    Dagster); one in DAILY_EVERY is a daily incremental model."""
    from quayside.dbt_sources import render_sources

    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(DEMO_DBT, folder, ignore=shutil.ignore_patterns("target", "logs"))
    (folder / "models" / "staging" / "_sources.yml").write_text(render_sources(specs))
    models -= len(list(folder.glob("models/**/*.sql")))

    def model(layer: str, domain: str, name: str, sql: str) -> None:
        path = folder / "models" / layer / domain / f"{name}.sql"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(sql)

    staging = []
    for s in [s for s in specs if s.name.startswith("dataset_")][:models]:
        name = f"stg_{s.domain}__{s.name}"
        model("staging", s.domain, name, f"select cast(record_id as varchar) as key, 1 as value, "
                                         f"_batch_date as batch_date\nfrom {{{{ source('{s.staged_namespace}', '{s.name}') }}}}\n")
        staging.append(name)
    rest = models - len(staging)
    intermediate, tests = [], []
    for i in range(rest):
        domain = DOMAINS[i % len(DOMAINS)]
        is_mart = i >= rest * 6 // 10
        pool = (intermediate or staging) if is_mart else staging + intermediate
        # deterministic picks that favour recent models, so chains get deep
        parents = sorted({pool[-1 - (i * k * 7919) % min(len(pool), 40)] for k in (1, 2, 3)[:1 + i % 3]})
        union = "\n    union all\n    ".join(f"select * from {{{{ ref('{p}') }}}}" for p in parents)
        daily = is_mart and i % DAILY_EVERY == 0
        config = "{{ config(materialized='incremental', tags=['daily']) }}\n" if daily else ""
        window = "\nwhere batch_date >= '{{ var(\"start_date\") }}' and batch_date < '{{ var(\"end_date\") }}'" \
            if daily else ""
        sql = f"{config}select key, sum(value) as value, batch_date\nfrom (\n    {union}\n){window}\ngroup by key, batch_date\n"
        if is_mart:
            name = f"{domain}_mart_{i:04d}"
            model("marts", domain, name, sql)
            tests.append({"name": name, "description": f"Mart {i} of the {domain} domain.",
                          "columns": [{"name": "key", "data_tests": ["not_null"]},
                                      {"name": "value", "data_tests": ["not_null"]}]})
        else:
            name = f"int_{domain}__{i:04d}"
            model("intermediate", domain, name, sql)
            intermediate.append(name)
    (folder / "models" / "marts" / "_synthetic_marts.yml").write_text(yaml.safe_dump({"version": 2, "models": tests}))


def dbt_parse(project: Path) -> float:
    """Prepare the manifest the way `make install` does; seconds taken."""
    shutil.rmtree(project / "target", ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([str(Path(sys.executable).parent / "dbt"), "parse", "--quiet", "--profiles-dir", "."],
                   cwd=project, check=True, env=WRITE_BYTECODE | {"DBT_SEND_ANONYMOUS_USAGE_STATS": "false"})
    return time.perf_counter() - started


QUAYSIDE_LOCATION = """from pathlib import Path

from dagster_dbt import DbtProject

from lake_assets.definitions import code_location

defs = code_location(datasets=Path({datasets!r}),
                     dbt_project=DbtProject(project_dir={project!r}, profiles_dir={project!r}))
"""
PEER_LOCATION = """import dagster as dg
from dagster_dbt import DbtCliResource, DbtProject, dbt_assets

project = DbtProject(project_dir={project!r}, profiles_dir={project!r}, target_path="target-peer")
project.prepare_if_dev()


@dbt_assets(manifest=project.manifest_path)
def dbt_models(context: dg.AssetExecutionContext, dbt: DbtCliResource):
    yield from dbt.cli(["build"], context=context).stream()


defs = dg.Definitions(assets=[dbt_models], resources={{"dbt": DbtCliResource(project_dir=project)}})
"""
LIMIT_LOCATION = """import dagster as dg


@dg.asset
def one_asset() -> None:
    pass


defs = dg.Definitions(assets=[one_asset])
"""


# --- contenders (each in a process of its own) --------------------------------------------
def validate(clock, location: str, dagster_dev: bool = False) -> dict:
    """`dagster definitions validate -f location` in this process; the clock runs from process
    start, so imports count. `dagster_dev`: as under `dagster dev` (dagster-dbt prepares then)."""
    if dagster_dev:
        os.environ["DAGSTER_IS_DEV_CLI"] = "1"
        os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"  # the venv's dbt
    from dagster._cli import cli

    os.environ.pop("DAGSTER_HOME", None)  # an ephemeral instance: `make`'s DAGSTER_HOME may not exist yet
    cli.main(["definitions", "validate", "-f", location, "--log-level", "warning"], standalone_mode=False)
    return {"cpu_seconds": time.process_time()}  # the machine is shared: CPU time says what wall time may not


# --- the scenario --------------------------------------------------------------------------
def run(data: Path, work: Path, quick: bool, repetitions: int) -> dict:
    spec_count, sizes = (10, [20]) if quick else (200, [500, 2_500])
    root = work / "s5"
    specs = write_specs(root / "datasets", spec_count)
    here = "benchmarks.scenarios.code_location_load"
    limit = root / "limit_location.py"
    limit.write_text(LIMIT_LOCATION)
    points = {}
    for models in sizes:
        project = root / f"dbt-{models}"
        write_dbt_project(project, specs, models)
        parse_seconds = dbt_parse(project)
        print(f"  {spec_count} specs, {models:,} models: dbt parse (manifest prepared) {parse_seconds:.1f} s", flush=True)
        quayside, peer = root / f"quayside_location_{models}.py", root / f"peer_location_{models}.py"
        quayside.write_text(QUAYSIDE_LOCATION.format(datasets=str(root / "datasets"), project=str(project)))
        peer.write_text(PEER_LOCATION.format(project=str(project)))
        if not quick:  # bytecode, untimed
            subprocess.run([sys.executable, "-m", "benchmarks.child", f"{here}:validate",
                            json.dumps({"location": str(quayside)})], cwd=ROOT, env=WRITE_BYTECODE, check=True,
                           capture_output=True)

        def reset(name: str, project: Path = project) -> None:
            if name == "dagster_dbt":  # no prepared manifest: every load parses from scratch
                shutil.rmtree(project / "target-peer", ignore_errors=True)

        figures = compare({
            "quayside": (f"{here}:validate", {"location": str(quayside)}),
            "dagster_dbt": (f"{here}:validate", {"location": str(peer), "dagster_dev": True}),
            "limit": (f"{here}:validate", {"location": str(limit)}),
        }, repetitions, before_each=reset, once=frozenset({"dagster_dbt"}))  # its dbt parse: ~30 s at 2,500 models
        points[models] = {"figures": figures, "dbt_parse_seconds": parse_seconds}
    shutil.rmtree(root, ignore_errors=True)
    return {"specs": spec_count, "points": points}


def report(result: dict, plots: Path) -> list[Row]:
    from lake_assets.metadata import new_figure

    points = {int(m): p for m, p in result["points"].items()}
    sizes = sorted(points)
    seconds = {name: [points[m]["figures"][name].seconds for m in sizes] for name in ("quayside", "dagster_dbt", "limit")}
    largest = sizes[-1]
    q, peer, limit = (seconds[name][-1] for name in ("quayside", "dagster_dbt", "limit"))
    rss = points[largest]["figures"]["quayside"].peak_rss_mb
    cpu = {name: [points[m]["figures"][name].extra.get("cpu_seconds", 0) for m in sizes]
           for name in ("quayside", "dagster_dbt", "limit")}
    fig, ax = new_figure()
    ax.plot(sizes, seconds["quayside"], marker="o", label="Quayside (manifest prepared at install)")
    ax.plot(sizes, seconds["dagster_dbt"], marker="o", label="dagster-dbt defaults (dbt parse on load)")
    ax.plot(sizes, seconds["limit"], marker="o", label="limit: bare Definitions, one asset")
    ax.set(xlabel="dbt models", ylabel="seconds", title=f"Scenario 5: code-location load, {result['specs']} dataset specs")
    ax.legend(fontsize=7)
    fig.savefig(plots / "s5_code_location_load.png", dpi=110, bbox_inches="tight")
    return [Row(
        "5", f"code-location load (definitions validate): {result['specs']} specs, "
             f"{' / '.join(f'{m:,}' for m in sizes)} dbt models",
        " / ".join(f"{t:.1f}" for t in seconds["quayside"]) + " s (CPU " +
        " / ".join(f"{t:.1f}" for t in cpu["quayside"]) + f" s), {rss:,.0f} MB RSS",
        "dagster-dbt defaults " + " / ".join(f"{t:.1f}" for t in seconds["dagster_dbt"]) + " s (CPU of the load "
        "process " + " / ".join(f"{t:.1f}" for t in cpu["dagster_dbt"]) + " s, dbt parse's apart)",
        " / ".join(f"{t:.1f}" for t in seconds["limit"]) + " s (CPU " + " / ".join(f"{t:.1f}" for t in cpu["limit"]) + " s)",
        f"{peer / q:.1f}× faster than the peer, {q - limit:.1f} s over the limit at {largest:,} models",
        f"< 10 s at {largest:,} models", q < 10,
        "each figure is a whole `dagster definitions validate` process (imports included); Quayside's excludes "
        "the manifest prepared at install: `dbt parse` took " +
        " / ".join(f"{points[m]['dbt_parse_seconds']:.1f}" for m in sizes) + " s; the peer loads the dbt "
        f"project only (not the {result['specs']} datasets' assets) and parses from scratch each load",
    )]
