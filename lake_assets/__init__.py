"""Quayside's Dagster code location (a thin layer over the plain-Python `quayside` package)."""

import warnings

import dagster as dg

# Single-run backfills, partition-aware freshness checks and dagster-pandas column types are
# beta/superseded in Dagster 1.13 but are the features we want; say so once, before any import.
for category in (dg.BetaWarning, dg.PreviewWarning, dg.SupersessionWarning):
    warnings.filterwarnings("ignore", category=category)
