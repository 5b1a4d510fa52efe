"""The per-column drift tests, with Evidently 0.7's DataDriftPreset defaults (so results compare).

Each test takes one column of each side, nulls and infinities already dropped: numeric columns as
sorted float64 arrays, categorical ones as value counts. It returns a `Score`: the statistic, the
threshold it was held to, and whether the column drifted.

- `wasserstein`: the first Wasserstein distance divided by the reference's std (at least 0.001);
  drift at >= threshold (0.1). Numeric only.
- `jensenshannon`: the Jensen-Shannon distance (natural log) of the two sides' shares per bin
  (numeric with more than 20 distinct reference values: Sturges bins over both sides' range) or per
  value; drift at >= threshold (0.1).
- `psi`: the population stability index over the same bins or values, empty cells filled with a
  small share; drift at >= threshold (0.1).
- `ks`: the two-sample Kolmogorov-Smirnov test's p-value (scipy); drift at <= threshold (0.05).
  Numeric only.
- `chisquare`: Pearson's chi-square p-value of the current counts against the reference's shares;
  drift at < threshold (0.05).
- `z`: the two-proportion Z-test's p-value (binary columns); drift at < threshold (0.05).

`default_method` picks the test the way the preset does: a reference over 1,000 rows gets
wasserstein (numeric with more than 5 distinct values across both sides) or jensenshannon (the
rest); a smaller one gets ks (numeric with more than 5), chisquare (more than 2 values) or z.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from airflow_provider_rayops.config.schema import DriftMethod as Method

Kind = Literal["numeric", "categorical"]

METHODS: tuple[Method, ...] = get_args(Method)
DEFAULT_THRESHOLDS: dict[Method, float] = {
    "wasserstein": 0.1,
    "jensenshannon": 0.1,
    "psi": 0.1,
    "ks": 0.05,
    "chisquare": 0.05,
    "z": 0.05,
}
# Tests whose statistic is a p-value: a column drifts when it is small. The others are distances.
P_VALUE_METHODS: frozenset[Method] = frozenset({"ks", "chisquare", "z"})
NUMERIC_ONLY: frozenset[Method] = frozenset({"wasserstein", "ks"})
# Above this many reference rows the preset uses distances rather than tests.
LARGE_REFERENCE_ROWS = 1000
# More distinct values than this (both sides together) makes a numeric column continuous.
CONTINUOUS_VALUES = 5
# Numeric columns with more distinct reference values than this are binned, the rest counted per value.
BINNED_VALUES = 20


@dataclass(frozen=True)
class Score:
    method: Method
    statistic: float
    threshold: float
    drifted: bool


def default_method(*, kind: Kind, reference_rows: int, distinct_values: int) -> Method:
    """The preset's choice for a column of `kind` whose non-null reference has `reference_rows` rows
    and whose two sides hold `distinct_values` distinct values together."""
    continuous = kind == "numeric" and distinct_values > CONTINUOUS_VALUES
    if reference_rows > LARGE_REFERENCE_ROWS:
        return "wasserstein" if continuous else "jensenshannon"
    if continuous:
        return "ks"
    return "chisquare" if distinct_values > 2 else "z"


def judge(method: Method, statistic: float, threshold: float) -> Score:
    """The verdict on `statistic`, each test's own way (ks drifts at p <= threshold, chisquare and z
    at p < threshold, distances at >= threshold). A NaN statistic never drifts."""
    if math.isnan(statistic):
        drifted = False
    elif method == "ks":
        drifted = statistic <= threshold
    elif method in P_VALUE_METHODS:
        drifted = statistic < threshold
    else:
        drifted = statistic >= threshold
    return Score(method=method, statistic=float(statistic), threshold=float(threshold), drifted=bool(drifted))


# --- numeric columns (sorted float64 arrays without NaN) ------------------------------------------


def wasserstein_normed(reference: np.ndarray, current: np.ndarray) -> float:
    """W1(reference, current) / max(std(reference), 0.001), from both sides sorted.

    W1 is the integral of |Q_ref(p) - Q_cur(p)| over p in (0, 1]: both quantile functions are steps
    at i/n_ref and j/n_cur, so the sum runs over the merged steps (n_ref + n_cur at most), one
    gather per side, with no sort of both sides together (scipy's way). The steps depend on the two
    sizes alone, so columns of the same sizes share them."""
    widths, at_ref, at_cur = _quantile_steps(len(reference), len(current))
    distance = float(np.dot(widths, np.abs(reference[at_ref] - current[at_cur])))
    return distance / max(float(np.std(reference)), 0.001)


@functools.lru_cache(maxsize=1)  # the steps of the current sizes; a group's columns usually share them
def _quantile_steps(n_ref: int, n_cur: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The merged steps of two quantile functions: each step's width and the index it takes on each side."""
    steps_ref = np.arange(1, n_ref + 1, dtype=np.float64) / n_ref
    steps_cur = np.arange(1, n_cur + 1, dtype=np.float64) / n_cur
    # IEEE division rounds correctly, so the same fraction from both sides is the same float and
    # union1d keeps it once.
    steps = steps_ref if n_ref == n_cur else np.union1d(steps_ref, steps_cur)
    widths = np.diff(steps, prepend=0.0)
    at_ref = np.searchsorted(steps_ref, steps, side="left")
    at_cur = at_ref if n_ref == n_cur else np.searchsorted(steps_cur, steps, side="left")
    return widths, at_ref, at_cur


def ks_p_value(reference: np.ndarray, current: np.ndarray) -> float:
    from scipy import stats

    return float(stats.ks_2samp(reference, current).pvalue)


def distinct_count(values: np.ndarray) -> int:
    """Distinct values of a sorted array."""
    return 0 if len(values) == 0 else 1 + int(np.count_nonzero(np.diff(values)))


def union_distinct(reference: np.ndarray, current: np.ndarray, *, at_most: int) -> int:
    """Distinct values of both sorted sides together, exact up to `at_most` (above it, a lower bound
    that is above `at_most`: enough to choose a test)."""
    ref, cur = distinct_count(reference), distinct_count(current)
    if max(ref, cur) > at_most:
        return max(ref, cur)
    return len(np.union1d(np.unique(reference), np.unique(current)))


def sturges_edges(reference: np.ndarray, current: np.ndarray, *, integer: bool = False) -> np.ndarray:
    """numpy's histogram_bin_edges(both sides, "sturges"), from their sizes and ranges alone;
    `integer`: the values were whole numbers (numpy then keeps bins at least 1 wide)."""
    low = min(reference[0], current[0])
    high = max(reference[-1], current[-1])
    if low == high:
        low, high = low - 0.5, high + 0.5
    size = len(reference) + len(current)
    span = high - low
    width = span / (np.log2(size) + 1.0)
    if integer and width and width < 1:
        width = 1
    bins = int(np.ceil(span / width)) if width else 1
    return np.linspace(low, high, bins + 1, endpoint=True)


def histogram_sorted(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """np.histogram(values, edges)[0] of a sorted array (the last bin includes its right edge)."""
    cuts = np.concatenate([np.searchsorted(values, edges[:-1], side="left"), np.searchsorted(values, edges[-1:], side="right")])
    return np.diff(cuts)


def value_counts_sorted(values: np.ndarray) -> dict[Any, int]:
    keys, counts = np.unique(values, return_counts=True)
    return dict(zip(keys.tolist(), counts.tolist(), strict=True))


# --- shares, on bins or on values -----------------------------------------------------------------


def shares(reference: Mapping[Any, int], current: Mapping[Any, int]) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """Both sides' share of each value either side holds (in one order)."""
    keys = list(dict.fromkeys([*reference, *current]))
    ref_total = sum(reference.values())
    cur_total = sum(current.values())
    ref = np.array([reference.get(key, 0) for key in keys], dtype=np.float64) / ref_total
    cur = np.array([current.get(key, 0) for key in keys], dtype=np.float64) / cur_total
    return keys, ref, cur


def jensenshannon(reference_shares: np.ndarray, current_shares: np.ndarray) -> float:
    from scipy.spatial import distance

    return float(distance.jensenshannon(reference_shares, current_shares))


def psi(reference_shares: np.ndarray, current_shares: np.ndarray) -> float:
    ref, cur = _fill_empty(reference_shares), _fill_empty(current_shares)
    return float(np.sum((ref - cur) * np.log(ref / cur)))


def _fill_empty(share: np.ndarray) -> np.ndarray:
    """Empty cells get a small share (the preset's: 1e-4, or a millionth of the smallest share when
    that is smaller), so the logarithm stays finite."""
    share = share.copy()
    nonzero = share[share != 0]
    if len(nonzero) == 0:
        return share
    smallest = float(nonzero.min())
    share[share == 0] = smallest / 10**6 if smallest <= 0.0001 else 0.0001
    return share


def chisquare_p_value(reference: Mapping[Any, int], current: Mapping[Any, int]) -> float:
    from scipy import stats

    keys = list(dict.fromkeys([*reference, *current]))
    ref_total = sum(reference.values())
    cur_total = sum(current.values())
    expected = np.array([reference.get(key, 0) for key in keys], dtype=np.float64) * (cur_total / ref_total)
    observed = np.array([current.get(key, 0) for key in keys], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):  # a value the reference never had: p = 0
        return float(stats.chisquare(observed, expected).pvalue)


def z_p_value(reference: Mapping[Any, int], current: Mapping[Any, int]) -> float:
    """Two-sided two-proportion Z-test on the share of rows that are not the first value (in sorted order)."""
    from scipy import stats

    keys = sorted({*reference, *current}, key=_sort_key)
    if len(keys) == 1:
        return 1.0
    ref_total = sum(reference.values())
    cur_total = sum(current.values())
    p_ref = (ref_total - reference.get(keys[0], 0)) / ref_total
    p_cur = (cur_total - current.get(keys[0], 0)) / cur_total
    pooled = (p_ref * ref_total + p_cur * cur_total) / (ref_total + cur_total)
    spread = math.sqrt(pooled * (1 - pooled) * (1.0 / ref_total + 1.0 / cur_total))
    if spread == 0:
        return float("nan")
    z = (p_ref - p_cur) / spread
    return float(2 * (1 - stats.norm.cdf(abs(z))))


def _sort_key(value: object) -> tuple[str, object]:
    # Keys of one column share a type; the name keeps a mixed set orderable all the same.
    return (type(value).__name__, value)
