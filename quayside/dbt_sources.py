"""dbt sources generated from the dataset specs, so the two can never drift apart.

`quayside dbt-sources` writes `dbt_project/models/staging/_sources.yml`; a test fails if the
committed file differs from what the specs say.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from quayside.specs import CDC_HISTORY_COLUMNS, DatasetSpec

SOURCES_FILE = Path(__file__).resolve().parent.parent / "dbt_project" / "models" / "staging" / "_sources.yml"
LINEAGE_DOCS = {
    "_source_file": "Raw-zone file the row came from.",
    "_batch_date": "Daily batch the file belongs to.",
    "_ingested_at": "When the file entered the raw zone.",
}
HISTORY_DOCS = dict(zip(CDC_HISTORY_COLUMNS, [
    "Change operation of this version: I, U or D.",
    "When this version became valid (the change's timestamp).",
    "When the next version replaced it; null while current.",
    "True for the current version of a key that is not deleted.",
]))


def _columns(spec: DatasetSpec) -> list[dict]:
    columns = []
    for c in spec.columns:
        column = {"name": c.name, "description": c.description, "data_type": c.type}
        if c.pii:
            column["meta"] = {"pii": True}
        columns.append(column)
    return columns + [{"name": n, "description": d} for n, d in LINEAGE_DOCS.items()]


def _table(spec: DatasetSpec, name: str, description: str, asset: list[str], extra: list[dict]) -> dict:
    return {
        "name": name,
        "description": description,
        "meta": {"dagster": {"asset_key": asset}, "owner": spec.owner, "load_mode": spec.load_mode},
        "columns": _columns(spec) + extra,
    }


def render_sources(specs: list[DatasetSpec]) -> str:
    sources: dict[str, dict] = {}
    for spec in sorted(specs, key=lambda s: s.key):
        source = sources.setdefault(spec.staged_namespace, {
            "name": spec.staged_namespace, "schema": spec.staged_namespace,
            "description": f"Staged (typed, validated) Iceberg tables of the {spec.domain} domain.", "tables": []})
        source["tables"].append(_table(spec, spec.name, spec.description, ["staged", spec.domain, spec.name], []))
        if spec.load_mode == "cdc":
            history = [{"name": n, "description": d} for n, d in HISTORY_DOCS.items()]
            source["tables"].append(_table(spec, spec.history_table, f"SCD type 2 history of {spec.key}.",
                                           ["staged", spec.domain, spec.history_table], history))
    body = {"version": 2, "sources": list(sources.values())}
    header = "# Generated from lake_assets/datasets by `quayside dbt-sources`; do not edit.\n"
    return header + yaml.safe_dump(body, sort_keys=False, allow_unicode=True, width=120)
