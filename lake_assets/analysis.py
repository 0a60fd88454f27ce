"""An analyst's workflow downstream of the marts: forecast each prison's population.

The model lives in quayside.forecast (runnable in a notebook); this asset feeds it the mart,
writes the forecast back to the curated zone as Iceberg and draws actuals against forecast.
"""

import dagster as dg
import pandas as pd

from lake_assets.curated import MART_FRESHNESS
from lake_assets.metadata import figure_markdown, new_figure
from quayside.forecast import forecast_population

PLOTTED_ESTABLISHMENTS = 6


@dg.asset(
    key=["curated", "prisons", "population_forecast"],
    ins={"daily": dg.AssetIn(["curated", "prisons", "prison_population_daily"], input_manager_key="lake_io")},
    io_manager_key="lake_io",
    group_name="prisons",
    owners=["team:prisons-data"],
    kinds={"python", "statsmodels", "iceberg"},
    automation_condition=dg.AutomationCondition.eager(),
    freshness_policy=MART_FRESHNESS,
    description="28-day forecast of each establishment's population (damped-trend exponential smoothing) "
                "with an 80% prediction interval.",
)
def population_forecast(context: dg.AssetExecutionContext, daily: pd.DataFrame) -> pd.DataFrame:
    result = forecast_population(daily[["snapshot_date", "establishment_code", "population"]])
    if result.skipped:
        context.log.warning(f"too little history to forecast {len(result.skipped)} establishment(s): "
                            f"{', '.join(result.skipped[:10])}")
    context.add_output_metadata({
        "establishments_forecast": result.table["establishment_code"].nunique(),
        "holdout_mape": dg.MetadataValue.float(round(result.holdout_mape, 4)) if result.holdout_mape is not None
        else dg.MetadataValue.text("n/a"),
        "actuals_vs_forecast": actuals_vs_forecast(daily, result.table),
    })
    return result.table


def actuals_vs_forecast(daily: pd.DataFrame, forecast: pd.DataFrame) -> dg.MetadataValue:
    """The largest establishments: history, forecast and its 80% interval."""
    latest = daily[daily["snapshot_date"] == daily["snapshot_date"].max()]
    largest = latest.nlargest(PLOTTED_ESTABLISHMENTS, "population")["establishment_code"].tolist()
    largest = [code for code in largest if code in set(forecast["establishment_code"])]
    fig, axes = new_figure(10, 5, rows=2, cols=3)
    for ax in axes.flat[len(largest):]:
        ax.set_visible(False)
    for ax, code in zip(axes.flat, largest):
        seen = daily[daily["establishment_code"] == code].sort_values("snapshot_date")
        ahead = forecast[forecast["establishment_code"] == code]
        ax.plot(seen["snapshot_date"], seen["population"], color="#333333", lw=1.2, label="actual")
        ax.plot(ahead["forecast_date"], ahead["population_forecast"], color="#3b7dd8", lw=1.2, label="forecast")
        ax.fill_between(ahead["forecast_date"], ahead["lower_80"], ahead["upper_80"], color="#3b7dd8", alpha=0.2,
                        label="80% interval")
        ax.set_title(code, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.tick_params(axis="x", rotation=45)
    if largest:
        axes.flat[0].legend(fontsize=6, loc="lower left")
    fig.suptitle("prison population: actuals and 28-day forecast (largest establishments)", fontsize=9)
    fig.tight_layout()
    return figure_markdown(fig, "actuals vs forecast")
