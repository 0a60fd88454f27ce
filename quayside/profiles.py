"""De-identified defendant profiles: what analysts need about a defendant, without who they are.

Names, dates of birth and postcodes stay in the staged zone; the profile keeps the age band at
case receipt and the postcode area (the letters before the first digit, ~120 areas in the UK).
"""

from __future__ import annotations

import pandas as pd

AGE_BANDS = ("under_18", "18_24", "25_34", "35_49", "50_64", "65_plus")
UNKNOWN = "unknown"
PROFILE_COLUMNS = ["defendant_id", "case_id", "age_band", "postcode_area", "custody_status"]


def age_band(age_years: pd.Series) -> pd.Series:
    bands = pd.cut(age_years, bins=[-1, 17, 24, 34, 49, 64, 200], labels=list(AGE_BANDS))
    return bands.astype(object).where(bands.notna(), UNKNOWN)


def defendant_profiles(defendants: pd.DataFrame, cases: pd.DataFrame) -> pd.DataFrame:
    """One row per defendant; the age band is taken at the case's receipt date (unknown when
    the birth date or the case is missing)."""
    merged = defendants.merge(cases[["case_id", "received_date"]], on="case_id", how="left")
    born, received = pd.to_datetime(merged["date_of_birth"]), pd.to_datetime(merged["received_date"])
    had_birthday = (received.dt.month > born.dt.month) | (
        (received.dt.month == born.dt.month) & (received.dt.day >= born.dt.day))
    age = received.dt.year - born.dt.year - (~had_birthday).astype(int)
    return pd.DataFrame({
        "defendant_id": merged["defendant_id"].astype(str),
        "case_id": merged["case_id"].astype(str),
        "age_band": age_band(age.where(born.notna() & received.notna())),
        "postcode_area": merged["postcode"].str.extract(r"^([A-Z]{1,2})\d", expand=False),
        "custody_status": merged["custody_status"].astype(str),
    })[PROFILE_COLUMNS]
