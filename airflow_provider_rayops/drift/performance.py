"""The champion's live quality: the rows it served joined with the labels that arrived since, scored.

Labels land as parquet or CSV files (a file or folder) holding the join key and the label; the
served rows are the inference log's (the request columns, `prediction`, `probability_<class>`).
A classifier is scored from its probabilities (`probability_<class>` columns: accuracy, auc, f1,
log_loss...), a regressor from `prediction` (rmse, mae, r2, mape), with the evaluate job's own
metrics (jobs/metrics.py). Labels of a class the model does not know are left out and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_rayops.drift.compute import PREDICTION_COLUMN, PROBABILITY_PREFIX
from airflow_provider_rayops.drift.data import DriftInputError, DriftSide

if TYPE_CHECKING:
    from airflow_provider_rayops.storage import S3Settings


@dataclass(frozen=True)
class LiveQuality:
    metric: str
    value: float | None
    rows: int  # served rows with a label
    unknown_labels: int  # labelled rows whose class the model does not know (left out)

    def to_json(self) -> dict[str, Any]:
        return {"metric": self.metric, "value": self.value, "rows": self.rows, "unknown_labels": self.unknown_labels}


def live_quality(
    served: Sequence[str],
    labels: str,
    *,
    join_key: str,
    label: str,
    metric: str,
    settings: S3Settings | None = None,
) -> LiveQuality:
    """`metric` of the `served` rows (inference log files) that have a label in `labels`."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from airflow_provider_rayops.jobs.metrics import classification_metrics, regression_metrics

    with DriftSide.open(list(served), label="the served rows", settings=settings) as side:
        outputs = [n for n in side.schema.names if n == PREDICTION_COLUMN or n.startswith(PROBABILITY_PREFIX)]
        _require(side, [join_key, PREDICTION_COLUMN], "the served rows (the inference log)")
        answers = _table(side, [join_key, *outputs])
    with DriftSide.open(labels, label=f"the labels ({labels})", settings=settings) as side:
        _require(side, [join_key, label], f"the labels ({labels})")
        truth = _table(side, [join_key, label])
    truth = truth.rename_columns([join_key, "rayops_label"])
    # Keys compared as text: an id typed as a number in CSV labels still meets the served string id.
    answers = answers.set_column(0, join_key, pc.cast(answers.column(join_key), pa.string()))
    truth = truth.set_column(0, join_key, pc.cast(truth.column(join_key), pa.string()))
    if pc.count_distinct(truth.column(join_key)).as_py() != truth.num_rows:
        raise DriftInputError(f"the labels ({labels}) hold a {join_key!r} more than once; give one label per served row")
    joined = answers.join(truth, keys=join_key, join_type="inner")
    classes = [n[len(PROBABILITY_PREFIX) :] for n in outputs if n.startswith(PROBABILITY_PREFIX)]
    if not classes:  # a regressor
        y = joined.column("rayops_label").to_numpy(zero_copy_only=False).astype(np.float64)
        pred = joined.column(PREDICTION_COLUMN).to_numpy(zero_copy_only=False).astype(np.float64)
        value = regression_metrics(y, pred, [metric])[metric] if len(y) else None
        return LiveQuality(metric=metric, value=value, rows=len(y), unknown_labels=0)
    names = [_class_name(v) for v in joined.column("rayops_label").to_pylist()]
    index = {name: i for i, name in enumerate(classes)}
    known = np.array([name in index for name in names], dtype=bool)
    y = np.array([index[name] for name, ok in zip(names, known, strict=True) if ok], dtype=np.int64)
    proba = np.column_stack([joined.column(f"{PROBABILITY_PREFIX}{c}").to_numpy(zero_copy_only=False) for c in classes])[known]
    value = classification_metrics(y, proba, classes, [metric])["metrics"][metric] if len(y) else None
    return LiveQuality(metric=metric, value=value, rows=int(known.sum()), unknown_labels=int((~known).sum()))


def _table(side: DriftSide, columns: Sequence[str]) -> Any:
    import pyarrow as pa

    schema = pa.schema([side.schema.field(name) for name in columns])
    return pa.Table.from_batches(list(side.batches(columns)), schema=schema)


def _require(side: DriftSide, columns: Sequence[str], what: str) -> None:
    missing = [name for name in columns if name not in side.schema.names]
    if missing:
        raise DriftInputError(f"{what} lack column(s) {', '.join(map(repr, missing))} (columns: {', '.join(side.schema.names)})")


def _class_name(value: Any) -> str:
    """A label as the model names its classes (str of the class): 1.0 read from CSV is class "1"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
