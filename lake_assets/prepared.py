"""Python between the staged layer and dbt: de-identify defendants before any model reads them.

The output's shape is a dagster-pandas type, checked on every materialisation; the lake IO
manager writes it as the Iceberg table prepared_courts.defendant_profiles (a dbt source).
"""

import dagster as dg
import pandas as pd
from dagster_pandas import PandasColumn, create_dagster_pandas_dataframe_type

from quayside.profiles import AGE_BANDS, UNKNOWN, defendant_profiles as build_profiles

DefendantProfiles = create_dagster_pandas_dataframe_type(
    name="DefendantProfiles",
    description="One row per defendant, no direct identifiers.",
    columns=[
        PandasColumn.string_column("defendant_id", non_nullable=True, unique=True),
        PandasColumn.string_column("case_id", non_nullable=True),
        PandasColumn.categorical_column("age_band", categories={*AGE_BANDS, UNKNOWN}, non_nullable=True),
        PandasColumn.string_column("postcode_area"),
        PandasColumn.categorical_column("custody_status", non_nullable=True, categories={
            "bail", "remanded_in_custody", "summons", "released_under_investigation"}),
    ],
)


@dg.asset(
    key=["prepared", "courts", "defendant_profiles"],
    ins={"defendants": dg.AssetIn(["staged", "courts", "defendants"], input_manager_key="lake_io"),
         "cases": dg.AssetIn(["staged", "courts", "cases"], input_manager_key="lake_io")},
    dagster_type=DefendantProfiles,
    io_manager_key="lake_io",
    group_name="courts",
    owners=["team:courts-data"],
    kinds={"python", "pandas", "iceberg"},
    automation_condition=dg.AutomationCondition.eager(),
    description="Defendants without names, birth dates or postcodes: age band at case receipt and postcode area.",
)
def defendant_profiles(defendants: pd.DataFrame, cases: pd.DataFrame) -> pd.DataFrame:
    return build_profiles(defendants, cases)
