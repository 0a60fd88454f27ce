"""Forecast each prison's daily population: damped-trend exponential smoothing (ETS A,Ad,N).

Plain pandas + statsmodels so analysts can run the same function in a notebook. Each
establishment is fitted on its own history; a hold-out of the last days measures the error.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

MIN_HISTORY_DAYS = 14  # fewer points cannot separate level from trend
COLUMNS = {"establishment_code": "string", "forecast_date": pd.ArrowDtype(pa.date32()), "population_forecast": "float64",
           "lower_80": "float64", "upper_80": "float64", "trained_through": pd.ArrowDtype(pa.date32())}


@dataclass
class Forecast:
    table: pd.DataFrame  # establishment_code, forecast_date, population_forecast, lower_80, upper_80, trained_through
    holdout_mape: float | None  # median over establishments of the mean absolute % error on the hold-out days
    skipped: list[str]  # establishments with too little history


def _fit_predict(history: pd.Series, horizon: int) -> pd.DataFrame:
    from statsmodels.tsa.exponential_smoothing.ets import ETSModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence chatter on short, flat series
        fit = ETSModel(history.astype(float), error="add", trend="add", damped_trend=True).fit(disp=False)
        frame = fit.get_prediction(start=len(history), end=len(history) + horizon - 1).summary_frame(alpha=0.2)
    return frame.rename(columns={"mean": "population_forecast", "pi_lower": "lower_80", "pi_upper": "upper_80"})


def forecast_population(daily: pd.DataFrame, horizon_days: int = 28, holdout_days: int = 7) -> Forecast:
    """`daily` has snapshot_date, establishment_code, population (one row per day and prison)."""
    rows, errors, skipped = [], [], []
    for code, group in daily.sort_values("snapshot_date").groupby("establishment_code", sort=True):
        series = group.set_index(pd.DatetimeIndex(group["snapshot_date"]))["population"].asfreq("D").interpolate()
        if len(series) < MIN_HISTORY_DAYS + holdout_days:
            skipped.append(code)
            continue
        held_out = _fit_predict(series.iloc[:-holdout_days].reset_index(drop=True), holdout_days)
        actual = series.iloc[-holdout_days:].to_numpy(dtype=float)
        errors.append(float(np.mean(np.abs(held_out["population_forecast"].to_numpy() - actual) / np.maximum(actual, 1))))
        frame = _fit_predict(series.reset_index(drop=True), horizon_days)
        frame.insert(0, "forecast_date", pd.date_range(series.index[-1] + pd.Timedelta(days=1), periods=horizon_days).date)
        frame.insert(0, "establishment_code", code)
        frame["trained_through"] = series.index[-1].date()
        rows.append(frame.reset_index(drop=True))
    table = pd.concat(rows, ignore_index=True)[list(COLUMNS)] if rows else pd.DataFrame(
        {name: pd.Series(dtype=dtype) for name, dtype in COLUMNS.items()})
    return Forecast(table, float(np.median(errors)) if errors else None, skipped)
