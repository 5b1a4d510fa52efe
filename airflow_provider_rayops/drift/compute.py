"""Data drift between a reference and current data, column by column, and the verdict on the whole.

    result = compute_drift("s3://bucket/snapshots/<hash>/train.parquet", "s3://bucket/inference/churn/")
    result.dataset_drift, result.drift_share, result.columns["tenure"].drifted

Every column of the reference is compared (less `exclude`, the prediction columns and rayops' own
`rayops_*` columns), or the `include` list. Each gets its test (see methods.py: the preset's choice,
or `method` for every column, or a per-column rule) and a verdict; the dataset drifts when the share
of drifted columns reaches `drift_share` (Evidently's rule, 0.5 by default). The model's outputs
(`prediction`, `probability_<class>`: the inference log's columns, or the `prediction` list) are
judged the same way but apart, as the prediction drift signal.

Input that cannot be judged is never judged: a reference column the current data lacks, a column
whose type differs between the sides, a column with no values on a side, or fewer rows than
`min_rows`. Each becomes a `Problem` naming the column, and the result has no verdict
(`dataset_drift` is False, `problems` says why): drift is not declared on garbage.

Memory: categorical columns are counted batch by batch; numeric columns are read a group at a time,
as many as `memory_mb` holds (each column of both sides costs about 24 bytes a row while it is
sorted), so data larger than memory streams through as long as one column of both sides fits.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_rayops.config.schema import DriftCorrection as Correction
from airflow_provider_rayops.drift import methods
from airflow_provider_rayops.drift.data import MAX_CATEGORIES, ColumnKind, DriftSide, kind_of, open_sides
from airflow_provider_rayops.drift.methods import DEFAULT_THRESHOLDS, Method

if TYPE_CHECKING:
    import numpy as np

    from airflow_provider_rayops.storage import S3Settings

RAYOPS_COLUMNS_PREFIX = "rayops_"
PREDICTION_COLUMN = "prediction"
PROBABILITY_PREFIX = "probability_"
BYTES_PER_VALUE = 24  # float64 as read, as NaN-free copy, and sorted (the sort is in place)
STEP_BYTES_PER_VALUE = 24  # Wasserstein's steps: widths, and an index into each side
REPORT_BINS = 20
REPORT_VALUES = 20


@dataclass(frozen=True)
class ColumnRule:
    """A column's own test or threshold (YAML `monitor.columns.<name>`)."""

    method: Method | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class DriftOptions:
    method: Method | None = None  # every column's test; None: the preset's choice per column
    threshold: float | None = None  # every column's threshold; None: the test's default
    columns: Mapping[str, ColumnRule] = field(default_factory=dict)
    drift_share: float = 0.5
    correction: Correction = "none"
    min_rows: int = 1
    include: Sequence[str] | None = None
    exclude: Sequence[str] = ()
    prediction: Sequence[str] | None = None  # None: `prediction` and `probability_*` found on both sides
    memory_mb: int = 1024


def drift_options(values: Mapping[str, Any]) -> DriftOptions:
    """DriftOptions from plain values (a monitor's YAML, a job's arguments): `columns` as {name: {method, threshold}}."""
    fields = {name: value for name, value in values.items() if value is not None and name in DriftOptions.__dataclass_fields__}
    if "columns" in fields:
        fields["columns"] = {name: ColumnRule(**dict(rule)) for name, rule in fields["columns"].items()}
    return DriftOptions(**fields)


@dataclass(frozen=True)
class Distribution:
    """What the report draws: counts per bin (`edges`, numeric) or per value (categorical; the rest
    of the values summed as "(other)")."""

    edges: list[float] | None
    values: list[str] | None
    reference: list[int]
    current: list[int]


@dataclass(frozen=True)
class ColumnDrift:
    name: str
    kind: ColumnKind
    method: Method
    statistic: float  # the p-value for ks, chisquare and z; the distance otherwise
    threshold: float
    drifted: bool
    adjusted: float | None  # the p-value after the correction for many columns; None without one
    reference_values: int  # rows with a value (not null, NaN or infinite)
    current_values: int
    current_missing: int
    distribution: Distribution

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": self.method,
            "statistic": _finite(self.statistic),
            "threshold": self.threshold,
            "drifted": self.drifted,
            "kind": self.kind,
            "reference_values": self.reference_values,
            "current_values": self.current_values,
            "current_missing": self.current_missing,
        }
        if self.adjusted is not None:
            out["adjusted"] = _finite(self.adjusted)
        return out


@dataclass(frozen=True)
class Problem:
    """Why a column (or, without one, the data) cannot be judged."""

    column: str | None
    message: str

    def __str__(self) -> str:
        return f"column {self.column!r}: {self.message}" if self.column else self.message


@dataclass
class DriftResult:
    reference: str
    current: str
    reference_rows: int
    current_rows: int
    columns: dict[str, ColumnDrift]
    prediction: dict[str, ColumnDrift]
    problems: list[Problem]
    skipped: dict[str, str]
    drift_share_limit: float
    correction: Correction
    seconds: float = 0.0

    @property
    def drifted_columns(self) -> list[str]:
        return [name for name, column in self.columns.items() if column.drifted]

    @property
    def drift_share(self) -> float:
        return len(self.drifted_columns) / len(self.columns) if self.columns else 0.0

    @property
    def dataset_drift(self) -> bool:
        return not self.problems and bool(self.columns) and self.drift_share >= self.drift_share_limit

    @property
    def prediction_drift(self) -> bool | None:
        """The `prediction` column's verdict (without one: any prediction column's); None when no
        prediction column was compared."""
        if not self.prediction:
            return None
        main = self.prediction.get(PREDICTION_COLUMN)
        return main.drifted if main is not None else any(c.drifted for c in self.prediction.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset_drift": self.dataset_drift,
            "drift_share": self.drift_share,
            "drift_share_limit": self.drift_share_limit,
            "drifted_columns": self.drifted_columns,
            "columns": {name: column.to_json() for name, column in self.columns.items()},
            "prediction_drift": self.prediction_drift,
            "prediction": {name: column.to_json() for name, column in self.prediction.items()},
            "problems": [str(problem) for problem in self.problems],
            "skipped": dict(self.skipped),
            "correction": self.correction,
            "reference": {"uri": self.reference, "rows": self.reference_rows},
            "current": {"uri": self.current, "rows": self.current_rows},
            "seconds": round(self.seconds, 3),
        }

    def distributions(self) -> dict[str, dict[str, Any]]:
        return {name: asdict(column.distribution) for name, column in {**self.columns, **self.prediction}.items()}


def compute_drift(
    reference: str | Sequence[str],
    current: str | Sequence[str],
    options: DriftOptions | None = None,
    *,
    prediction_reference: str | Sequence[str] | None = None,
    settings: S3Settings | None = None,
) -> DriftResult:
    """Compare `current` with `reference` (URIs of parquet or CSV files or folders; see DriftSide).

    `prediction_reference`: where the model's outputs on reference data are (the evaluate job's
    predictions on the validation split), when `reference` has none (a training snapshot)."""
    options = options or DriftOptions()
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        ref, cur = stack.enter_context(open_sides(reference, current, settings=settings))
        predicted = (
            stack.enter_context(DriftSide.open(prediction_reference, settings=settings))
            if prediction_reference is not None
            else None
        )
        result = _compare(ref, cur, options, predicted)
    result.seconds = time.perf_counter() - started
    return result


def _compare(ref: DriftSide, cur: DriftSide, options: DriftOptions, predicted: DriftSide | None = None) -> DriftResult:
    result = DriftResult(
        reference=ref.label,
        current=cur.label,
        reference_rows=ref.rows,
        current_rows=cur.rows,
        columns={},
        prediction={},
        problems=[],
        skipped={},
        drift_share_limit=options.drift_share,
        correction=options.correction,
    )
    # min_rows is about the live data; a small reference is judged with the tests for small samples.
    for side, what, least in ((ref, "the reference", 1), (cur, "the current data", options.min_rows)):
        if side.rows < least:
            result.problems.append(Problem(None, f"{what} ({side.label}) has {side.rows} rows, fewer than min_rows={least}"))
    if result.problems:
        return result
    prediction = _prediction_columns(predicted or ref, cur, options)
    features = _feature_columns(ref, options, prediction)
    if not features:
        result.problems.append(Problem(None, "no column to compare: the reference has none left after include/exclude"))
        return result
    for group, names, side in (("columns", features, ref), ("prediction", prediction, predicted or ref)):
        kinds: dict[str, ColumnKind] = {}
        for name in names:
            kind = _column_kind(name, side, cur, explicit=options.include is not None or name in prediction, result=result)
            if kind is not None:
                kinds[name] = kind
        judged = _judge_columns(side, cur, kinds, options, result)
        setattr(result, group, _corrected({name: judged[name] for name in names if name in judged}, options.correction))
    if not result.columns and not result.problems:
        result.problems.append(
            Problem(None, f"no column to compare: {', '.join(f'{k} ({v})' for k, v in result.skipped.items())}")
        )
    return result


def _prediction_columns(ref: DriftSide, cur: DriftSide, options: DriftOptions) -> list[str]:
    if options.prediction is not None:
        return list(options.prediction)
    both = set(ref.schema.names) & set(cur.schema.names)
    return [
        name for name in ref.schema.names if name in both and (name == PREDICTION_COLUMN or name.startswith(PROBABILITY_PREFIX))
    ]


def _feature_columns(ref: DriftSide, options: DriftOptions, prediction: Sequence[str]) -> list[str]:
    if options.include is not None:
        return list(options.include)
    left_out = {*options.exclude, *prediction}
    return [name for name in ref.schema.names if name not in left_out and not name.startswith(RAYOPS_COLUMNS_PREFIX)]


def _column_kind(name: str, ref: DriftSide, cur: DriftSide, *, explicit: bool, result: DriftResult) -> ColumnKind | None:
    """How `name` is compared; None (with a problem or a skip recorded) when it cannot be."""
    import pyarrow as pa

    if name not in ref.schema.names:
        result.problems.append(Problem(name, f"not in the reference (columns: {', '.join(ref.schema.names)})"))
        return None
    if name not in cur.schema.names:
        result.problems.append(Problem(name, "in the reference, missing from the current data"))
        return None
    ref_type, cur_type = ref.schema.field(name).type, cur.schema.field(name).type
    for kind_type, what in ((ref_type, "the reference"), (cur_type, "the current data")):
        if pa.types.is_null(kind_type):
            result.problems.append(Problem(name, f"every value in {what} is null"))
            return None
    ref_kind, cur_kind = kind_of(ref_type), kind_of(cur_type)
    if ref_kind is None:
        reason = f"type {ref_type} is not compared (numbers, strings and booleans are)"
        if explicit:
            result.problems.append(Problem(name, reason))
        else:
            result.skipped[name] = reason
        return None
    if cur_kind != ref_kind or pa.types.is_boolean(ref_type) != pa.types.is_boolean(cur_type):
        result.problems.append(Problem(name, f"{ref_type} in the reference, {cur_type} in the current data"))
        return None
    return ref_kind


def _judge_columns(
    ref: DriftSide, cur: DriftSide, kinds: Mapping[str, ColumnKind], options: DriftOptions, result: DriftResult
) -> dict[str, ColumnDrift]:
    import pyarrow as pa

    judged: dict[str, ColumnDrift] = {}
    categorical = [name for name, kind in kinds.items() if kind == "categorical"]
    if categorical:
        ref_counts, cur_counts = ref.counts(categorical), cur.counts(categorical)
        for name in categorical:
            ref_count, cur_count = ref_counts[name], cur_counts[name]
            if ref_count is None or cur_count is None:
                result.problems.append(
                    Problem(name, f"more than {MAX_CATEGORIES:,} distinct values (an id or free text?): add it to exclude")
                )
                continue
            column = _judge_counts(name, ref_count, cur_count, cur.rows, options, result)
            if column is not None:
                judged[name] = column
    numeric = [name for name, kind in kinds.items() if kind == "numeric"]
    per_column = BYTES_PER_VALUE * (ref.rows + cur.rows)
    # Wasserstein's merged quantile steps (three arrays of both sides' length) are shared by the group.
    shared = STEP_BYTES_PER_VALUE * (ref.rows + cur.rows)
    group = max(1, (options.memory_mb * 2**20 - shared) // max(per_column, 1))
    for start in range(0, len(numeric), group):
        names = numeric[start : start + group]
        ref_values, cur_values = ref.numeric(names), cur.numeric(names)
        for name in names:
            reference, current = ref_values.pop(name), cur_values.pop(name)
            # Whole numbers without gaps, as pandas would hold them (a null makes its column float).
            integer = all(
                pa.types.is_integer(side.schema.field(name).type) and len(values) == side.rows
                for side, values in ((ref, reference), (cur, current))
            )
            column = _judge_numeric(name, reference, current, cur.rows, options, result, integer=integer)
            if column is not None:
                judged[name] = column
    return judged


def _rule(name: str, options: DriftOptions, kind: ColumnKind) -> ColumnRule:
    """The column's own rule over the options' ones; a numeric-only test given for every column
    leaves categorical ones to the preset (as Evidently's separate num/cat tests do)."""
    own = options.columns.get(name, ColumnRule())
    preset = kind == "categorical" and options.method in methods.NUMERIC_ONLY and own.method is None
    if preset:  # the options' test and threshold are for numbers
        return ColumnRule(method=None, threshold=own.threshold)
    threshold = own.threshold if own.threshold is not None else options.threshold
    return ColumnRule(method=own.method or options.method, threshold=threshold)


def _empty_side(name: str, ref_values: int, cur_values: int, result: DriftResult) -> bool:
    for values, what in ((ref_values, "the reference"), (cur_values, "the current data")):
        if values == 0:
            result.problems.append(Problem(name, f"no values in {what}: every row is null, NaN or infinite"))
            return True
    return False


def _judge_numeric(
    name: str,
    ref: np.ndarray,
    cur: np.ndarray,
    cur_rows: int,
    options: DriftOptions,
    result: DriftResult,
    *,
    integer: bool = False,
) -> ColumnDrift | None:
    if _empty_side(name, len(ref), len(cur), result):
        return None
    rule = _rule(name, options, "numeric")
    method = rule.method or methods.default_method(
        kind="numeric",
        reference_rows=len(ref),
        distinct_values=methods.union_distinct(ref, cur, at_most=methods.CONTINUOUS_VALUES),
    )
    binned = methods.distinct_count(ref) > methods.BINNED_VALUES
    if method == "wasserstein":
        statistic = methods.wasserstein_normed(ref, cur)
    elif method == "ks":
        statistic = methods.ks_p_value(ref, cur)
    elif method in ("jensenshannon", "psi"):
        if binned:
            edges = methods.sturges_edges(ref, cur, integer=integer)
            ref_shares = methods.histogram_sorted(ref, edges) / len(ref)
            cur_shares = methods.histogram_sorted(cur, edges) / len(cur)
        else:
            _, ref_shares, cur_shares = methods.shares(methods.value_counts_sorted(ref), methods.value_counts_sorted(cur))
        statistic = (methods.jensenshannon if method == "jensenshannon" else methods.psi)(ref_shares, cur_shares)
    elif method == "chisquare":
        statistic = methods.chisquare_p_value(methods.value_counts_sorted(ref), methods.value_counts_sorted(cur))
    else:
        statistic = methods.z_p_value(methods.value_counts_sorted(ref), methods.value_counts_sorted(cur))
    return _column(name, "numeric", method, statistic, rule, len(ref), len(cur), cur_rows, _numeric_distribution(ref, cur))


def _judge_counts(
    name: str, ref: Mapping[Any, int], cur: Mapping[Any, int], cur_rows: int, options: DriftOptions, result: DriftResult
) -> ColumnDrift | None:
    ref_values, cur_values = sum(ref.values()), sum(cur.values())
    if _empty_side(name, ref_values, cur_values, result):
        return None
    rule = _rule(name, options, "categorical")
    if rule.method in methods.NUMERIC_ONLY:
        result.problems.append(Problem(name, f"method {rule.method} compares numbers; the column holds categories"))
        return None
    method = rule.method or methods.default_method(
        kind="categorical", reference_rows=ref_values, distinct_values=len({*ref, *cur})
    )
    if method in ("jensenshannon", "psi"):
        _, ref_shares, cur_shares = methods.shares(ref, cur)
        statistic = (methods.jensenshannon if method == "jensenshannon" else methods.psi)(ref_shares, cur_shares)
    elif method == "chisquare":
        statistic = methods.chisquare_p_value(ref, cur)
    else:
        statistic = methods.z_p_value(ref, cur)
    return _column(name, "categorical", method, statistic, rule, ref_values, cur_values, cur_rows, _value_distribution(ref, cur))


def _column(
    name: str,
    kind: ColumnKind,
    method: Method,
    statistic: float,
    rule: ColumnRule,
    ref_values: int,
    cur_values: int,
    cur_rows: int,
    distribution: Distribution,
) -> ColumnDrift:
    threshold = rule.threshold if rule.threshold is not None else DEFAULT_THRESHOLDS[method]
    score = methods.judge(method, statistic, threshold)
    return ColumnDrift(
        name=name,
        kind=kind,
        method=method,
        statistic=score.statistic,
        threshold=score.threshold,
        drifted=score.drifted,
        adjusted=None,
        reference_values=ref_values,
        current_values=cur_values,
        current_missing=cur_rows - cur_values,
        distribution=distribution,
    )


def _corrected(columns: dict[str, ColumnDrift], correction: Correction) -> dict[str, ColumnDrift]:
    """The p-value tests judged again after the correction for testing many columns at once:
    Bonferroni multiplies each p-value by their number; Benjamini-Hochberg adjusts them to control
    the share of false discoveries. Distances are left as they are."""
    import dataclasses

    tested = [name for name, column in columns.items() if column.method in methods.P_VALUE_METHODS]
    if correction == "none" or not tested:
        return columns
    count = len(tested)
    p_values = [columns[name].statistic for name in tested]
    if correction == "bonferroni":
        adjusted = [min(1.0, p * count) for p in p_values]
    else:
        order = sorted(range(count), key=lambda i: (math.isnan(p_values[i]), p_values[i]))
        adjusted = [math.nan] * count
        running = 1.0
        for rank in range(count, 0, -1):
            i = order[rank - 1]
            running = min(running, p_values[i] * count / rank) if not math.isnan(p_values[i]) else running
            adjusted[i] = running if not math.isnan(p_values[i]) else math.nan
    out = dict(columns)
    for name, value in zip(tested, adjusted, strict=True):
        column = columns[name]
        out[name] = dataclasses.replace(
            column, adjusted=value, drifted=methods.judge(column.method, value, column.threshold).drifted
        )
    return out


def _numeric_distribution(ref: np.ndarray, cur: np.ndarray) -> Distribution:
    import numpy as np

    low, high = float(min(ref[0], cur[0])), float(max(ref[-1], cur[-1]))
    if low == high:
        low, high = low - 0.5, high + 0.5
    edges = np.linspace(low, high, REPORT_BINS + 1)
    return Distribution(
        edges=edges.tolist(),
        values=None,
        reference=methods.histogram_sorted(ref, edges).tolist(),
        current=methods.histogram_sorted(cur, edges).tolist(),
    )


def _value_distribution(ref: Mapping[Any, int], cur: Mapping[Any, int]) -> Distribution:
    ranked = sorted(
        {*ref, *cur}, key=lambda v: -(ref.get(v, 0) / max(sum(ref.values()), 1) + cur.get(v, 0) / max(sum(cur.values()), 1))
    )
    shown = ranked[:REPORT_VALUES]
    values = [str(v) for v in shown]
    ref_counts = [ref.get(v, 0) for v in shown]
    cur_counts = [cur.get(v, 0) for v in shown]
    if len(ranked) > REPORT_VALUES:
        values.append("(other)")
        ref_counts.append(sum(ref.values()) - sum(ref_counts))
        cur_counts.append(sum(cur.values()) - sum(cur_counts))
    return Distribution(edges=None, values=values, reference=ref_counts, current=cur_counts)


def _finite(value: float) -> float | None:
    """JSON has no NaN or infinity: those become null."""
    return value if math.isfinite(value) else None
