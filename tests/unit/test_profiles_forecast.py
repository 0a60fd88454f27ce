"""The Python steps around dbt: defendant de-identification and the prison population forecast."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd

from quayside.forecast import MIN_HISTORY_DAYS, forecast_population
from quayside.profiles import PROFILE_COLUMNS, defendant_profiles


def test_profiles_band_age_at_case_receipt_and_drop_identifiers():
    defendants = pd.DataFrame({
        "defendant_id": ["D1", "D2", "D3", "D4", "D5"],
        "case_id": ["C1", "C1", "C2", "C2", "C9"],
        "first_name": ["Ann", "Bob", "Cy", "Di", "Ed"], "last_name": ["A", "B", "C", "D", "E"],
        # 18 on the receipt day; 17 the day before their birthday; unknown birth date; 65; case missing
        "date_of_birth": [date(2008, 3, 1), date(2008, 3, 2), None, date(1961, 1, 1), date(1990, 1, 1)],
        "postcode": ["SW1A 1AA", "B1 1AA", None, "M60 2LA", "LS1 1UR"],
        "custody_status": ["bail", "summons", "bail", "remanded_in_custody", "bail"],
    })
    cases = pd.DataFrame({"case_id": ["C1", "C2"], "received_date": [date(2026, 3, 1), date(2026, 6, 30)]})
    out = defendant_profiles(defendants, cases).set_index("defendant_id")
    assert list(out.reset_index().columns) == PROFILE_COLUMNS  # no names, birth dates or postcodes
    assert out["age_band"].to_dict() == {"D1": "18_24", "D2": "under_18", "D3": "unknown", "D4": "65_plus",
                                         "D5": "unknown"}
    assert out["postcode_area"].fillna("").to_dict() == {"D1": "SW", "D2": "B", "D3": "", "D4": "M", "D5": "LS"}


def history(days: int, slope: float, prisons: int = 3, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    start = date(2026, 10, 1)
    return pd.DataFrame([(start + timedelta(days=d), f"P{p}", 400 + 100 * p + slope * d + rng.normal(0, 1))
                         for p in range(prisons) for d in range(days)],
                        columns=["snapshot_date", "establishment_code", "population"])


def test_forecast_follows_the_trend_with_an_interval():
    result = forecast_population(history(42, slope=2.0), horizon_days=14)
    assert result.skipped == [] and len(result.table) == 3 * 14
    first = result.table[result.table["establishment_code"] == "P0"].iloc[0]
    assert first["forecast_date"] == date(2026, 10, 1) + timedelta(days=42)
    assert abs(first["population_forecast"] - (400 + 2.0 * 42)) < 6  # the damped trend still carries on
    assert (result.table["lower_80"] < result.table["population_forecast"]).all()
    assert (result.table["population_forecast"] < result.table["upper_80"]).all()
    assert result.holdout_mape is not None and result.holdout_mape < 0.02


def test_short_histories_are_skipped_with_a_typed_empty_table():
    result = forecast_population(history(MIN_HISTORY_DAYS, slope=1.0))  # + the 7 hold-out days are missing
    assert result.skipped == ["P0", "P1", "P2"] and result.table.empty and result.holdout_mape is None
    assert str(result.table["population_forecast"].dtype) == "float64"


def test_the_dagster_pandas_type_rejects_profiles_that_break_the_contract():
    import dagster as dg

    from lake_assets.prepared import DefendantProfiles

    good = pd.DataFrame({"defendant_id": ["D1", "D2"], "case_id": ["C1", "C1"], "age_band": ["18_24", "unknown"],
                         "postcode_area": ["SW", None], "custody_status": ["bail", "summons"]})
    assert dg.check_dagster_type(DefendantProfiles, good).success
    bad = good.assign(defendant_id=["D1", "D1"], age_band=["18_24", "eighteen"])
    result = dg.check_dagster_type(DefendantProfiles, bad)
    assert not result.success
    assert "defendant_id" in result.description or "age_band" in result.description
