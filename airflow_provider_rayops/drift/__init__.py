"""Drift: does the data a model now sees still look like the data it learned from?

`compute_drift(reference, current, options)` compares two parquet or CSV sources column by column
with Evidently's DataDriftPreset defaults (methods.py) and returns a `DriftResult`: each column's
test, statistic, threshold and verdict, the prediction drift signal, and the dataset verdict.
The same computation runs from the shell (`rayops drift REFERENCE CURRENT [--json]`).
"""

from airflow_provider_rayops.drift.compute import (
    ColumnDrift,
    ColumnRule,
    DriftOptions,
    DriftResult,
    Problem,
    compute_drift,
)
from airflow_provider_rayops.drift.data import DriftInputError

__all__ = ["ColumnDrift", "ColumnRule", "DriftInputError", "DriftOptions", "DriftResult", "Problem", "compute_drift"]
