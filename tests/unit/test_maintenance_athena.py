"""On the aws profile maintenance is Athena statements; checked here with a fake Athena client."""

from __future__ import annotations

from datetime import timedelta

import pytest

from quayside.lake import LakeSettings
from quayside.maintenance import MaintenanceSettings, athena_statements, run_athena


class FakeAthena:
    def __init__(self, fail_on: str = ""):
        self.queries, self.fail_on = [], fail_on

    def start_query_execution(self, **kwargs):
        self.queries.append(kwargs)
        return {"QueryExecutionId": str(len(self.queries))}

    def get_query_execution(self, QueryExecutionId):
        sql = self.queries[int(QueryExecutionId) - 1]["QueryString"]
        state = "FAILED" if self.fail_on and self.fail_on in sql else "SUCCEEDED"
        return {"QueryExecution": {"Status": {"State": state, "StateChangeReason": "boom"}}}


def test_statements_optimize_and_vacuum_with_the_retention_as_table_properties():
    settings = MaintenanceSettings(snapshot_retention=timedelta(days=2), keep_last_snapshots=3)
    assert athena_statements("staged_courts", "cases", settings) == [
        "ALTER TABLE staged_courts.cases SET TBLPROPERTIES ('vacuum_max_snapshot_age_seconds'='172800', "
        "'vacuum_min_snapshots_to_keep'='3')",
        "OPTIMIZE staged_courts.cases REWRITE DATA USING BIN_PACK",
        "VACUUM staged_courts.cases",
    ]


@pytest.mark.parametrize("namespace, name", [("staged_courts", "cases; DROP TABLE x"), ("Staged", "cases"),
                                             ("staged_courts", "`cases`")])
def test_identifiers_are_validated_before_they_reach_sql(namespace, name):
    with pytest.raises(ValueError, match="must match"):
        athena_statements(namespace, name, MaintenanceSettings())


def test_statements_run_in_order_in_the_workgroup_and_a_failure_names_the_statement():
    settings = LakeSettings(profile="aws", bucket="lake-bucket", athena_workgroup="etl")
    client = FakeAthena()
    statements = athena_statements("staged_courts", "cases", MaintenanceSettings())
    run_athena(settings, "staged_courts", statements, client=client, poll_seconds=0)
    assert [q["QueryString"] for q in client.queries] == statements
    assert client.queries[0]["WorkGroup"] == "etl"
    assert client.queries[0]["QueryExecutionContext"] == {"Database": "staged_courts"}
    assert client.queries[0]["ResultConfiguration"] == {"OutputLocation": "s3://lake-bucket/athena-results/"}
    with pytest.raises(RuntimeError, match="failed `OPTIMIZE staged_courts.cases"):
        run_athena(settings, "staged_courts", statements, client=FakeAthena(fail_on="OPTIMIZE"), poll_seconds=0)


@pytest.mark.parametrize("field, value", [("target_file_size_bytes", 100), ("min_files_to_compact", 1),
                                          ("keep_last_snapshots", 0), ("snapshot_retention", timedelta(-1))])
def test_settings_are_checked(field, value):
    with pytest.raises(ValueError):
        MaintenanceSettings(**{field: value})
