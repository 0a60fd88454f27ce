"""The dbt project on both targets: built on DuckDB into the lake, compiled for Athena, and the
Athena SQL (transpiled back to DuckDB) gives the same rows as the local target."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import sqlglot

from quayside.demo import generate
from quayside.ingest import land, stage
from quayside.lake import Lake, LakeSettings
from quayside.specs import load_specs
from tests.conftest import DATASETS

DBT_DIR = Path(__file__).resolve().parents[2] / "dbt_project"
DBT = str(Path(sys.executable).parent / "dbt")


def dbt(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run([DBT, *args, "--project-dir", str(DBT_DIR), "--profiles-dir", str(DBT_DIR)],
                            capture_output=True, text=True, env=env, cwd=DBT_DIR, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def built_lake(tmp_path_factory):
    """The demo, staged, then `dbt build` on the local target."""
    home = tmp_path_factory.mktemp("dbt-lake")
    lake = Lake(LakeSettings(home=str(home)))  # also makes dbt-duckdb's folder
    generate(lake, end=date(2026, 11, 1))
    for spec in load_specs(DATASETS):
        landed = land(lake, spec)
        for day in landed.batch_dates if spec.daily_partitioned else [None]:
            stage(lake, spec, day)
    env = os.environ | {"QUAYSIDE_HOME": str(home), "QUAYSIDE_PROFILE": "local", "PYTHONWARNINGS": "ignore"}
    dbt("build", "--target-path", str(home / "target-local"), env=env)
    return lake, env, home


def test_marts_are_iceberg_tables_in_the_curated_zone(built_lake):
    lake, _, _ = built_lake
    curated = [t for t in lake.tables() if t.zone == "curated"]
    assert curated and all(t.rows > 0 for t in curated), curated


def test_every_model_compiles_for_athena_and_parses_as_athena_sql(built_lake):
    _, env, home = built_lake
    target = home / "target-athena"
    dbt("compile", "--target", "athena", "--no-populate-cache", "--no-introspect", "--target-path", str(target), env=env)
    compiled = sorted((target / "compiled").rglob("*.sql"))
    models = [p for p in compiled if "/models/" in p.as_posix()]
    assert models
    for path in compiled:
        sqlglot.parse_one(path.read_text(), read="athena")  # raises on anything Athena would reject


def test_athena_sql_gives_the_same_rows_as_the_local_target(built_lake):
    lake, env, home = built_lake
    target = home / "target-athena"
    if not (target / "manifest.json").exists():
        dbt("compile", "--target", "athena", "--no-populate-cache", "--no-introspect", "--target-path", str(target),
            env=env)
    manifest = json.loads((target / "manifest.json").read_text())
    con = lake.connect()
    con.execute("CREATE SCHEMA IF NOT EXISTS athena")
    models = {uid: n for uid, n in manifest["nodes"].items() if n["resource_type"] == "model"}
    order = _topological(models)
    for uid in order:
        node = models[uid]
        sql = (target / "compiled" / "quayside" / node["original_file_path"]).read_text()
        duck = sqlglot.transpile(sql, read="athena", write="duckdb")[0]
        for other in models.values():  # refs point at the Athena relations: read the parity views instead
            duck = duck.replace(f'"awsdatacatalog"."{other["schema"]}"."{other["alias"]}"', f'athena."{other["alias"]}"')
        duck = duck.replace('"awsdatacatalog".', "")
        con.execute(f'CREATE OR REPLACE VIEW athena."{node["alias"]}" AS {duck}')
    marts = [n for n in models.values() if n["fqn"][1] == "marts"]
    assert marts
    for node in marts:
        local = f'{node["schema"]}."{node["alias"]}"'
        athena = f'athena."{node["alias"]}"'
        for a, b in ((local, athena), (athena, local)):
            diff = con.sql(f"SELECT count(*) FROM (SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b})").fetchone()[0]
            assert diff == 0, f"{node['name']}: {diff} row(s) of {a} not in {b}"


def _topological(models: dict[str, dict]) -> list[str]:
    done: list[str] = []

    def visit(uid: str) -> None:
        if uid in done:
            return
        for dep in models[uid]["depends_on"]["nodes"]:
            if dep in models:
                visit(dep)
        done.append(uid)

    for uid in sorted(models):
        visit(uid)
    return done
