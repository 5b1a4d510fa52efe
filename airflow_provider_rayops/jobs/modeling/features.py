"""The feature encoder: snapshot rows in, the float32 matrix every rayops model takes out.

`FeatureEncoder` also owns the target: for classification its classes and the label encoding
(a label is a class index), for regression the standardisation of the target (a label is
(value - mean) / std, a float32). A checkpoint stores it as encoder.json, so a model is always
read with the encoding it was trained on.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_rayops.jobs.modeling.artifacts import ARTIFACT_FORMAT_VERSION, ModelArtifactError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa


class FeatureMismatch(ValueError):
    """Rows given to a model lack a column it was trained on, or carry a value it cannot take."""

    def __init__(self, *, column: str, problem: str) -> None:
        self.column = column
        self.problem = problem
        super().__init__(f"column {column!r}: {problem}")


@dataclass(frozen=True)
class EncodedColumn:
    """How one snapshot column becomes model inputs."""

    name: str
    kind: str  # numeric | bool | categorical
    mean: float = 0.0
    std: float = 1.0
    categories: tuple[str, ...] = ()

    @property
    def output_names(self) -> list[str]:
        if self.kind == "categorical":
            return [f"{self.name}={value}" for value in self.categories]
        return [self.name]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "numeric":
            out.update(mean=self.mean, std=self.std)
        if self.kind == "categorical":
            out["categories"] = list(self.categories)
        return out


@dataclass(frozen=True)
class TargetSpec:
    """The target column and its task kind. Classification: a label is the index of its class in
    `classes`. Regression: no classes; a label is the value standardised by `mean` and `std`."""

    name: str
    kind: str
    classes: tuple[Any, ...]
    task: str = "classification"
    mean: float = 0.0
    std: float = 1.0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "task": self.task, "classes": list(self.classes)}
        if self.task == "regression":
            out.update(mean=self.mean, std=self.std)
        return out


@dataclass(frozen=True)
class FeatureEncoder:
    """Snapshot rows -> float32 model inputs, and target values -> class indices.

    Build it with `FeatureEncoder.fit(manifest, train_table)`; store it with `to_json()` and
    rebuild it with `from_json()`. `transform(rows)` accepts a pyarrow Table, a pandas
    DataFrame, a dict of columns or a list of row dicts, and returns an (n, num_features)
    float32 array; extra columns are ignored, a missing one raises `FeatureMismatch`.
    """

    columns: tuple[EncodedColumn, ...]
    target: TargetSpec
    version: int = field(default=ARTIFACT_FORMAT_VERSION)

    # -- building ---------------------------------------------------------------------

    @classmethod
    def fit(
        cls, manifest: Mapping[str, Any], train: pa.Table | pd.DataFrame | Iterable[pa.Table | pa.RecordBatch]
    ) -> FeatureEncoder:
        """Learn the numeric statistics and the target classes from the train split: a table, or
        its batches one at a time (a split larger than memory is never held whole).

        A numeric column's mean and standard deviation are over its finite values (nulls, NaN and
        infinities are what `transform` fills in, so they do not shift the statistics)."""
        kinds = {c["name"]: c["kind"] for c in manifest["columns"]}
        categories = manifest.get("categories") or {}
        target_name = manifest["target"]
        target_kind = kinds[target_name]
        # Snapshots written before regression existed have no task: they were classification.
        regression = manifest.get("task", "classification") == "regression"
        for name in manifest["features"]:
            if kinds[name] not in ("numeric", "bool", "categorical"):
                raise FeatureMismatch(column=name, problem=f"kind {kinds[name]!r} is not numeric, bool or categorical")
        numeric = [name for name in manifest["features"] if kinds[name] == "numeric"]
        moments = {name: _Moments() for name in numeric}
        target_moments = _Moments()
        target_values: set[int] = set()
        batches = [_to_table(train)] if _is_rows(train) else train
        for batch in batches:
            present = set(batch.schema.names)
            for name in manifest["features"]:
                if name not in present:
                    raise FeatureMismatch(column=name, problem="listed in the manifest but absent from the train split")
            for name in numeric:
                moments[name].add(batch.column(name))
            if regression:
                target_moments.add(batch.column(target_name), strict=target_name)
            elif target_kind == "numeric":
                target_values.update(_whole_classes(batch.column(target_name), target_name))

        columns = []
        for name in manifest["features"]:
            kind = kinds[name]
            if kind == "numeric":  # a constant column keeps std 1: it encodes as zeros, no division by zero
                columns.append(EncodedColumn(name=name, kind=kind, mean=moments[name].mean, std=moments[name].std))
            elif kind == "bool":
                columns.append(EncodedColumn(name=name, kind=kind))
            else:
                columns.append(EncodedColumn(name=name, kind=kind, categories=tuple(categories.get(name, ()))))
        if regression:
            target = TargetSpec(
                name=target_name,
                kind=target_kind,
                classes=(),
                task="regression",
                mean=target_moments.mean,
                std=target_moments.std,
            )
            return cls(columns=tuple(columns), target=target)
        if target_kind == "bool":
            classes: tuple[Any, ...] = (False, True)
        elif target_kind == "categorical":
            classes = tuple(categories.get(target_name, ()))
        else:
            classes = tuple(sorted(target_values))
        if len(classes) < 2:
            raise FeatureMismatch(
                column=target_name, problem=f"target has {len(classes)} class(es) in the train split; need at least 2"
            )
        return cls(columns=tuple(columns), target=TargetSpec(name=target_name, kind=target_kind, classes=classes))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "columns": [c.to_json() for c in self.columns],
            "target": self.target.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | str) -> FeatureEncoder:
        parsed: Mapping[str, Any] = json.loads(data) if isinstance(data, str) else data
        version = int(parsed.get("version", 0))
        if version != ARTIFACT_FORMAT_VERSION:
            raise ModelArtifactError(
                where="encoder", problem=f"format version {version}; this rayops reads {ARTIFACT_FORMAT_VERSION}"
            )
        columns = tuple(
            EncodedColumn(
                name=c["name"],
                kind=c["kind"],
                mean=float(c.get("mean", 0.0)),
                std=float(c.get("std", 1.0)),
                categories=tuple(c.get("categories", ())),
            )
            for c in parsed["columns"]
        )
        t = parsed["target"]
        target = TargetSpec(
            name=t["name"],
            kind=t["kind"],
            classes=tuple(t.get("classes", ())),
            task=t.get("task", "classification"),
            mean=float(t.get("mean", 0.0)),
            std=float(t.get("std", 1.0)),
        )
        return cls(columns=columns, target=target)

    # -- using ------------------------------------------------------------------------

    @property
    def feature_names(self) -> list[str]:
        """Names of the encoded inputs, in order (`plan=basic` for a one-hot column)."""
        return [name for c in self.columns for name in c.output_names]

    @property
    def num_features(self) -> int:
        return sum(len(c.output_names) for c in self.columns)

    @property
    def input_columns(self) -> list[str]:
        """The raw columns `transform` reads."""
        return [c.name for c in self.columns]

    @property
    def task(self) -> str:
        """classification or regression."""
        return self.target.task

    @property
    def classes(self) -> list[Any]:
        return list(self.target.classes)

    @property
    def num_classes(self) -> int:
        """Classes of a classification target; 0 for regression."""
        return len(self.target.classes)

    @property
    def num_outputs(self) -> int:
        """Width of the model's output: one logit per class, or one value for regression."""
        return 1 if self.task == "regression" else self.num_classes

    def decode_target(self, labels: np.ndarray) -> np.ndarray:
        """Regression: model outputs (standardised) back to target values, float64."""
        import numpy as np

        return np.asarray(labels, dtype=np.float64).reshape(-1) * self.target.std + self.target.mean

    def transform(self, rows: Any) -> np.ndarray:
        """(n, num_features) float32 inputs for `rows` (Table, DataFrame, dict of columns, list of dicts)."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        table = _to_table(rows, columns=self.input_columns)
        # Filled a feature (a contiguous row here) at a time, then transposed in one copy: writing
        # columns of an (n, d) array strides over every row, 4x slower at 500 features.
        out = np.zeros((self.num_features, table.num_rows), dtype=np.float32)
        at = 0
        for col in self.columns:
            values = table.column(col.name)
            if col.kind == "numeric":
                try:
                    numbers = values.cast(pa.float64())
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise FeatureMismatch(column=col.name, problem=f"expected numbers, got {values.type}") from exc
                array = numbers.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
                array = np.where(np.isfinite(array), array, col.mean)  # null, NaN and infinity: the mean
                out[at] = (array - col.mean) / col.std
                at += 1
            elif col.kind == "bool":
                try:
                    flags = pc.fill_null(values.cast(pa.bool_()), False)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise FeatureMismatch(column=col.name, problem=f"expected booleans, got {values.type}") from exc
                out[at] = flags.to_numpy(zero_copy_only=False)
                at += 1
            else:
                width = len(col.categories)
                if width:
                    strings = values.cast(pa.string()) if not pa.types.is_string(values.type) else values
                    index = pc.index_in(strings, value_set=pa.array(col.categories, pa.string()))
                    index = index.to_numpy(zero_copy_only=False)
                    known = ~np.isnan(index.astype(np.float64)) if index.dtype.kind == "f" else np.ones(len(index), bool)
                    rows_known = np.nonzero(known)[0]
                    out[at + index[known].astype(np.int64), rows_known] = 1.0
                at += width
        return np.ascontiguousarray(out.T)

    def encode_target(self, rows: Any) -> np.ndarray:
        """The labels of `rows`: int64 class indices (classification) or float32 standardised values
        (regression); unknown, null or NaN values raise."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        table = _to_table(rows, columns=[self.target.name])
        values = table.column(self.target.name)
        if self.task == "regression":
            numbers = _target_numbers(values, self.target.name)
            return ((numbers - self.target.mean) / self.target.std).astype(np.float32)
        if self.target.kind == "bool":
            values = values.cast(pa.bool_())
            if values.null_count:
                raise FeatureMismatch(column=self.target.name, problem="target has nulls")
            return values.to_numpy(zero_copy_only=False).astype(np.int64)
        value_set = pa.array(self.target.classes, pa.string() if self.target.kind == "categorical" else pa.int64())
        if self.target.kind != "categorical":
            values = values.cast(pa.int64())
        index = pc.index_in(values, value_set=value_set)
        if index.null_count:
            raise FeatureMismatch(
                column=self.target.name,
                problem=f"{index.null_count} target value(s) are not among the classes {list(self.target.classes)}",
            )
        return index.to_numpy(zero_copy_only=False).astype(np.int64)


def target_values(rows: Any, name: str) -> np.ndarray:
    """A regression target column of `rows` as float64; FeatureMismatch on a non-number, null or NaN."""
    return _target_numbers(_to_table(rows, columns=[name]).column(name), name)


def _target_numbers(values: pa.ChunkedArray, name: str) -> np.ndarray:
    import numpy as np
    import pyarrow as pa

    try:
        numbers = values.cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise FeatureMismatch(column=name, problem=f"a regression target must be numbers, got {values.type}") from exc
    array = numbers.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
    bad = int(np.sum(~np.isfinite(array)))
    if bad:
        raise FeatureMismatch(column=name, problem=f"target has {bad} null, NaN or infinite value(s)")
    return array


class _Moments:
    """Count, mean and sum of squared deviations of a column's finite values, batch by batch
    (Chan et al.'s pairwise update: batches of any size merge exactly)."""

    def __init__(self) -> None:
        self.n = 0
        self._mean = 0.0
        self._m2 = 0.0

    def add(self, values: pa.ChunkedArray | pa.Array, *, strict: str | None = None) -> None:
        """Take `values` in; with `strict` (the column's name) a null, NaN or infinity is refused, not skipped."""
        import numpy as np

        array = _target_numbers(values, strict) if strict else _finite_numbers(values)
        k = len(array)
        if k == 0:
            return
        mean = float(array.mean())
        m2 = float(np.square(array - mean).sum())
        total = self.n + k
        delta = mean - self._mean
        self._mean += delta * k / total
        self._m2 += m2 + delta * delta * self.n * k / total
        self.n = total

    @property
    def mean(self) -> float:
        return self._mean if self.n and math.isfinite(self._mean) else 0.0

    @property
    def std(self) -> float:
        std = math.sqrt(self._m2 / self.n) if self.n else 1.0
        return std if math.isfinite(std) and std >= 1e-12 else 1.0


def _finite_numbers(values: pa.ChunkedArray | pa.Array) -> np.ndarray:
    import numpy as np
    import pyarrow as pa

    array = values.cast(pa.float64()).to_numpy(zero_copy_only=False)
    return array[np.isfinite(array)]


def _whole_classes(values: pa.ChunkedArray | pa.Array, name: str) -> set[int]:
    """The distinct values of a numeric classification target; refused when one has a fraction."""
    import numpy as np

    array = values.to_numpy(zero_copy_only=False)
    if array.dtype.kind == "f" and not np.all(np.equal(np.mod(array, 1), 0)):
        raise FeatureMismatch(
            column=name,
            problem="target has fractional values but the snapshot's task is classification; set train.task: regression",
        )
    return {int(v) for v in np.unique(array)}


def _is_rows(rows: Any) -> bool:
    """Whether `rows` is one set of rows `_to_table` takes, not an iterable of batches."""
    import pyarrow as pa

    if isinstance(rows, (pa.Table, pa.RecordBatch, Mapping)) or hasattr(rows, "dtypes"):
        return True
    return isinstance(rows, Sequence) and (not rows or isinstance(rows[0], Mapping))


def _to_table(rows: Any, columns: Sequence[str] | None = None) -> pa.Table:
    import pyarrow as pa

    if isinstance(rows, pa.Table):
        table = rows
    elif isinstance(rows, pa.RecordBatch):
        table = pa.Table.from_batches([rows])
    elif hasattr(rows, "to_dict") and hasattr(rows, "columns") and hasattr(rows, "dtypes"):  # pandas
        wanted = [c for c in (columns or list(rows.columns)) if c in rows.columns]
        table = pa.Table.from_pandas(rows[wanted], preserve_index=False)
    elif isinstance(rows, Mapping):
        table = pa.table({k: (v if isinstance(v, (pa.Array, pa.ChunkedArray)) else pa.array(list(v))) for k, v in rows.items()})
    elif isinstance(rows, Sequence) and (not rows or isinstance(rows[0], Mapping)):
        table = pa.Table.from_pylist(list(rows))
    else:
        raise TypeError(
            f"rows must be a pyarrow Table, a pandas DataFrame, a dict of columns or a list of dicts, got {type(rows).__name__}"
        )
    if columns is not None:
        index = {name: i for i, name in enumerate(table.column_names)}  # select() by name is a scan per column
        for name in columns:
            if name not in index:
                raise FeatureMismatch(column=name, problem=f"missing from the rows (they have: {', '.join(table.column_names)})")
        table = table.select([index[name] for name in columns])
    return table
