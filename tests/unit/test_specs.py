"""Spec validation: clear errors naming the file and the field; identifiers and paths are safe."""

from __future__ import annotations

import textwrap

import pytest

from quayside.specs import SpecError, check_relative_path, load_spec, load_specs

GOOD = """
name: population
domain: prisons
description: Daily population
owner: team:prisons
source: {location: prisons/population/, pattern: 'pop_(?P<date>\\d{4}-\\d{2}-\\d{2})\\.csv', format: csv}
columns:
  - {name: snapshot_date, type: date, nullable: false}
  - {name: population, type: int, min: 0}
primary_key: [snapshot_date]
partitioning: {column: snapshot_date, granularity: day, start: 2026-01-01}
"""


def write(tmp_path, text: str, domain: str = "prisons", name: str = "population"):
    path = tmp_path / domain / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def test_a_good_spec_loads(tmp_path):
    spec = load_spec(write(tmp_path, GOOD))
    assert spec.key == "prisons.population" and spec.daily_partitioned
    assert spec.source.matches("pop_2026-01-02.csv").group("date") == "2026-01-02"


@pytest.mark.parametrize("change, field, message", [
    (("type: int", "type: integer"), "columns[1].type", "unknown type 'integer'"),
    (("owner: team:prisons", "owner: nobody"), "owner", "e-mail address"),
    (("location: prisons/population/", "location: ../etc/"), "source.location", "'..'"),
    (("location: prisons/population/", "location: /etc/"), "source.location", "relative"),
    (("name: snapshot_date, type: date", "name: Snapshot-Date, type: date"), "columns[0].name", "must match"),
    (("primary_key: [snapshot_date]", "primary_key: [id]"), "<spec>", "primary_key column 'id'"),
    (("format: csv", "format: xlsx"), "source.format", "Input should be"),
    (("pattern: 'pop_", "pattern: '(pop_"), "source.pattern", "regular expression"),
    (("description: Daily population", "descripton: typo"), "descripton", "Extra inputs"),
])
def test_invalid_specs_name_the_file_and_field(tmp_path, change, field, message):
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    text = str(err.value)
    assert str(path) in text and field in text and message in text, text


def test_invalid_yaml_and_misplaced_files_are_reported(tmp_path):
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(write(tmp_path, "name: [unclosed"))
    with pytest.raises(SpecError, match="expected prisons/population.yaml"):
        load_spec(write(tmp_path, GOOD, name="other"))


def test_load_specs_reports_every_bad_file_together(tmp_path):
    write(tmp_path, GOOD.replace("type: int", "type: nope"))
    write(tmp_path, GOOD.replace("name: population", "name: beds").replace("format: csv", "format: nope"),
          name="beds")
    with pytest.raises(SpecError) as err:
        load_specs(tmp_path)
    assert "beds.yaml" in str(err.value) and "population.yaml" in str(err.value)


@pytest.mark.parametrize("bad", ["../x.csv", "a/../../x", "/abs", "a\\b", "C:/x", "a/./b", "nul\x00"])
def test_path_traversal_is_rejected(bad):
    with pytest.raises(ValueError):
        check_relative_path(bad)


def test_cdc_needs_a_primary_key(tmp_path):
    text = GOOD.replace("primary_key: [snapshot_date]", "primary_key: []") + "load_mode: cdc\n"
    with pytest.raises(SpecError, match="cdc needs a primary_key"):
        load_spec(write(tmp_path, text))


@pytest.mark.parametrize("column", ["op", "file_row_number"])
def test_cdc_columns_may_not_clash_with_history_columns_or_row_positions(tmp_path, column):
    text = GOOD.replace("name: population, type: int", f"name: {column}, type: int") + "load_mode: cdc\n"
    with pytest.raises(SpecError, match=rf"\['{column}'\] are reserved in CDC datasets"):
        load_spec(write(tmp_path, text))


UNPARTITIONED = GOOD.replace("partitioning: {column: snapshot_date, granularity: day, start: 2026-01-01}\n", "")
TABLE_SOURCE = "source: {connection: prison_db, location: prisons/population_db/, table: {table: nomis.population, watermark: snapshot_date}}"


def test_a_table_source_gets_quayside_named_parquet_files(tmp_path):
    spec = load_spec(write(tmp_path, UNPARTITIONED.replace(GOOD.splitlines()[5], TABLE_SOURCE)))
    assert spec.source.extracted and spec.source.format == "parquet"
    assert spec.source.matches("LOAD20261130112233123456.parquet") and spec.source.matches("20261130112233123456-changes.parquet")
    assert not spec.source.matches("other.parquet")


@pytest.mark.parametrize("source, message", [
    ("table: {table: 'population; DROP TABLE x'}", "table name part"),
    ("table: {table: a.b.c}", "'schema.table' or 'table'"),
    ("table: {table: population, watermark: updated}", "source.table column 'updated' is not declared"),
    ("table: {table: population}, pattern: '.*', format: parquet", "leave out pattern and format"),
    ("api: {path: ../admin}", "'..'"),
    ("api: {path: 'https://elsewhere.example/x'}", "path under the connection's base_url"),
    ("api: {path: v1/x, incremental_param: since}", "incremental_param and incremental_field go together"),
    ("table: {table: population}, api: {path: v1/x}", "not both"),
])
def test_table_and_api_sources_are_validated(tmp_path, source, message):
    line = f"source: {{connection: upstream, location: prisons/x/, {source}}}"
    with pytest.raises(SpecError, match="source|spec") as err:
        load_spec(write(tmp_path, UNPARTITIONED.replace(GOOD.splitlines()[5], line)))
    assert message in str(err.value), str(err.value)


@pytest.mark.parametrize("text, message", [
    (GOOD, "not by day"),  # daily batches come from file names; an extraction has none
    (UNPARTITIONED.replace("owner:", "load_mode: snapshot\nowner:"), "reads its whole source each time"),
])
def test_extractions_fit_the_load_mode(tmp_path, text, message):
    with pytest.raises(SpecError) as err:
        load_spec(write(tmp_path, text.replace(GOOD.splitlines()[5], TABLE_SOURCE)))
    assert message in str(err.value), str(err.value)
