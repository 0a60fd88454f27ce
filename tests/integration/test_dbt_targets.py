"""The dbt project on both targets: built on DuckDB into the lake, compiled for Athena, and the
Athena SQL (transpiled back to DuckDB) gives the same rows as the local target."""

from __future__ import annotations

import json

import sqlglot

from tests.conftest import run_dbt


def test_marts_are_iceberg_tables_in_the_curated_zone(built_lake):
    lake, _, _ = built_lake
    curated = [t for t in lake.tables() if t.zone == "curated"]
    assert curated and all(t.rows > 0 for t in curated), curated


def test_every_model_compiles_for_athena_and_parses_as_athena_sql(built_lake):
    _, env, home = built_lake
    target = home / "target-athena"
    run_dbt("compile", "--target", "athena", "--no-populate-cache", "--no-introspect", "--target-path", str(target),
            env=env)
    compiled = sorted((target / "compiled").rglob("*.sql"))
    models = [p for p in compiled if "/models/" in p.as_posix()]
    assert models
    for path in compiled:
        sqlglot.parse_one(path.read_text(), read="athena")  # raises on anything Athena would reject


def test_on_athena_marts_are_iceberg_and_daily_models_merge_incrementally(built_lake):
    _, env, home = built_lake
    target = home / "target-athena"
    if not (target / "manifest.json").exists():
        run_dbt("compile", "--target", "athena", "--no-populate-cache", "--no-introspect", "--target-path",
                str(target), env=env)
    nodes = json.loads((target / "manifest.json").read_text())["nodes"].values()
    marts = [n for n in nodes if n["resource_type"] == "model" and n["fqn"][1] == "marts"]
    assert marts and all(n["config"]["table_type"] == "iceberg" for n in marts)
    daily = [n for n in marts if "daily" in n["tags"]]
    assert daily and all(n["config"]["materialized"] == "incremental" and n["config"]["incremental_strategy"] == "merge"
                         and n["config"]["unique_key"] for n in daily)
    assert all(n["schema"].startswith("curated_") for n in marts)


def test_athena_sql_gives_the_same_rows_as_the_local_target(built_lake):
    lake, env, home = built_lake
    target = home / "target-athena"
    if not (target / "manifest.json").exists():
        run_dbt("compile", "--target", "athena", "--no-populate-cache", "--no-introspect", "--target-path", str(target),
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
