"""dbt sources and dataset specs cannot drift apart: the committed sources are what the specs generate."""

from __future__ import annotations

import yaml

from quayside.dbt_sources import SOURCES_FILE, render_sources
from quayside.specs import load_specs
from tests.conftest import DATASETS


def test_committed_dbt_sources_match_the_specs():
    assert SOURCES_FILE.read_text() == render_sources(load_specs(DATASETS)), (
        "dbt sources are out of date: run `.venv/bin/quayside dbt-sources`")


def test_every_source_links_to_its_staged_asset_and_documents_every_column():
    sources = yaml.safe_load(SOURCES_FILE.read_text())["sources"]
    specs = {s.key: s for s in load_specs(DATASETS)}
    for source in sources:
        for table in source["tables"]:
            domain = source["name"].removeprefix("staged_")
            assert table["meta"]["dagster"]["asset_key"] == ["staged", domain, table["name"]]
            assert all(c["description"] for c in table["columns"])
            spec = specs.get(f"{domain}.{table['name']}")
            if spec:
                assert [c["name"] for c in table["columns"][: len(spec.columns)]] == [c.name for c in spec.columns]
