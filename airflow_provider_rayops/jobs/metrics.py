"""The evaluation metrics, in numpy alone (no torch, no scikit-learn): the evaluate job scores a
model with them, and the monitor scores the champion's served rows once their labels arrive.
Definitions: see jobs/evaluate.py's module docstring.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


def classification_metrics(y: np.ndarray, proba: np.ndarray, classes: Sequence[Any], names: Sequence[str]) -> dict[str, Any]:
    """{"metrics": {name: value | None}, "per_class": {str(label): {...}}} for class indices `y`
    and probabilities `proba` (n, len(classes)); see the module docstring for the definitions."""
    import numpy as np

    y = np.asarray(y, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    k = len(classes)
    pred = proba.argmax(axis=1)
    per_index = []
    for c in range(k):
        tp = int(np.sum((pred == c) & (y == c)))
        predicted = int(np.sum(pred == c))
        support = int(np.sum(y == c))
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_index.append({"precision": precision, "recall": recall, "f1": f1, "support": support})

    binary = k == 2
    present = [c for c in range(k) if per_index[c]["support"] > 0]

    def overall(name: str) -> float | None:
        if name == "accuracy":
            return float(np.mean(pred == y))
        if name == "balanced_accuracy":
            return float(np.mean([per_index[c]["recall"] for c in present]))
        if name in ("precision", "recall", "f1"):
            return per_index[1][name] if binary else float(np.mean([p[name] for p in per_index]))
        if name == "auc":
            if binary:
                return binary_auc(y == 1, proba[:, 1])
            scores = [binary_auc(y == c, proba[:, c]) for c in present]
            defined = [s for s in scores if s is not None]
            return float(np.mean(defined)) if defined else None
        if name == "log_loss":
            eps = np.finfo(np.float64).eps
            return float(-np.mean(np.log(np.clip(proba[np.arange(len(y)), y], eps, 1.0))))
        raise KeyError(name)

    return {
        "metrics": {name: finite_or_none(overall(name)) for name in names},
        "per_class": {str(classes[c]): per_index[c] for c in range(k)},
    }


def binary_auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC (Mann-Whitney U with average ranks for ties); None when one side is empty."""
    import numpy as np

    positive = np.asarray(positive, dtype=bool)
    n_pos = int(positive.sum())
    n_neg = len(positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0
    ranks = average_rank[inverse]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def regression_metrics(y: np.ndarray, pred: np.ndarray, names: Sequence[str]) -> dict[str, float | None]:
    """rmse, mae, r2 and mape of predictions `pred` for targets `y` (see the module docstring)."""
    import numpy as np

    y = np.asarray(y, dtype=np.float64)
    error = np.asarray(pred, dtype=np.float64).reshape(-1) - y
    spread = float(np.sum((y - y.mean()) ** 2))
    nonzero = y != 0
    values: dict[str, float | None] = {
        "rmse": float(np.sqrt(np.mean(error**2))),
        "mae": float(np.mean(np.abs(error))),
        "r2": 1.0 - float(np.sum(error**2)) / spread if spread > 0 else None,
        "mape": float(np.mean(np.abs(error[nonzero]) / np.abs(y[nonzero]))) if nonzero.any() else None,
    }
    return {name: finite_or_none(values[name]) for name in names}


def finite_or_none(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
