"""Models, features and the model artifact contract shared by train, tune, evaluate and Serve.

What the pieces are:

- `FeatureEncoder` turns snapshot rows into the float32 matrix every rayops model takes:
  numeric columns standardised with the train split's mean and std (nulls become the mean),
  bool columns as 0/1 (null 0), categorical columns one-hot over the manifest's categories
  (null or unseen: all zeros). It also owns the target: its classes and the label encoding.
  Classification only: a bool target has classes [False, True], a categorical target the
  manifest's categories, an integer target the sorted values of the train split.
- `TabularMLP` is the built-in model: encoded features in, one logit per class out.
- `load_predictor(model_uri)` gives a `Predictor` (`predict_proba`, `predict`) for a model
  logged by the train job, or for a checkpoint folder.

Artifact contract (version 1)
-----------------------------

A **checkpoint folder** (Ray Train checkpoint under `<run_root>/train/checkpoint_epoch_<NNNNNN>/`,
written by `save_checkpoint`, read by `load_checkpoint`):

    model.json      {"format_version": 1, "format": "state_dict" | "module",
                     "class": "pkg.module:Class", "kwargs": {...}}
                    "state_dict": model.pt is the module's state_dict and the module is
                    rebuilt as Class(**kwargs); "module": model.pt is the whole pickled module.
    model.pt        the weights (never the DDP wrapper: keys have no "module." prefix)
    encoder.json    FeatureEncoder.to_json(): what the model's input columns mean
    state.json      {"epoch": last finished epoch, "history": [per-epoch metrics, oldest
                     first, each with "epoch"], "resumes": [{"epoch", "attempt"}]}
    optimizer.pt    optional: {"optimizer": state_dict, "scaler": state_dict | None}, for resuming

The model's forward takes a float32 tensor (n, encoder.num_features) and returns logits:
(n, num_classes), or (n,) / (n, 1) for one binary logit.

An **MLflow training run** (one per Airflow task; see jobs/tracking.py) holds:

    params          the loop's params by their YAML names, plus rayops.* run settings
    metrics         every per-epoch metric the loop reported, step = epoch
    tags            rayops.* lineage (snapshot URI and hash, config hash and git commit,
                    dag_id, run_id, try, Ray job id, run key)
    logged model    name "model", MLflow PyTorch flavour of the module above, serialized as
                    "pt2" (torch.export, MLflow 3's default: loading runs no pickled code and
                    needs no rayops class; "pickle" only when the module cannot be exported),
                    with a tensor signature (float32 [-1, num_features] -> float32 logits)
                    and an input example (encoded validation rows); its folder also holds
                    extra_files/encoder.json and extra_files/model.json, so the model URI
                    alone is enough to predict from raw rows (`load_predictor`).

Nothing here imports Ray or MLflow at module level (a Serve replica or the evaluate job pays
only for what it calls); torch is imported, every user of this module needs it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import pyarrow as pa

ARTIFACT_FORMAT_VERSION = 1
MODEL_FILE = "model.pt"
MODEL_SPEC_FILE = "model.json"
ENCODER_FILE = "encoder.json"
STATE_FILE = "state.json"
OPTIMIZER_FILE = "optimizer.pt"
# Where mlflow.pytorch.log_model(extra_files=...) puts our files inside the logged model folder.
MLFLOW_EXTRA_FILES_DIR = "extra_files"


class ModelArtifactError(Exception):
    """A model or checkpoint folder does not follow the artifact contract; `where` says which one."""

    def __init__(self, *, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")


class FeatureMismatch(ValueError):
    """Rows given to a model lack a column it was trained on, or carry a value it cannot take."""

    def __init__(self, *, column: str, problem: str) -> None:
        self.column = column
        self.problem = problem
        super().__init__(f"column {column!r}: {problem}")


# -- features ----------------------------------------------------------------------------


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
    """The target column and its classes; a label is the index of its class in `classes`."""

    name: str
    kind: str
    classes: tuple[Any, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "classes": list(self.classes)}


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
    def fit(cls, manifest: Mapping[str, Any], train: pa.Table | pd.DataFrame) -> FeatureEncoder:
        """Learn the numeric statistics and the target classes from the train split."""
        import numpy as np
        import pyarrow.compute as pc

        table = _to_table(train)
        kinds = {c["name"]: c["kind"] for c in manifest["columns"]}
        categories = manifest.get("categories") or {}
        columns = []
        for name in manifest["features"]:
            kind = kinds[name]
            if name not in table.column_names:
                raise FeatureMismatch(column=name, problem="listed in the manifest but absent from the train split")
            if kind == "numeric":
                values = table.column(name).cast("float64")
                mean = pc.mean(values).as_py()
                std = pc.stddev(values).as_py()
                mean = 0.0 if mean is None or not math.isfinite(mean) else float(mean)
                # A constant column must not divide by zero; it then encodes as all zeros.
                std = 1.0 if std is None or not math.isfinite(std) or std < 1e-12 else float(std)
                columns.append(EncodedColumn(name=name, kind=kind, mean=mean, std=std))
            elif kind == "bool":
                columns.append(EncodedColumn(name=name, kind=kind))
            elif kind == "categorical":
                columns.append(EncodedColumn(name=name, kind=kind, categories=tuple(categories.get(name, ()))))
            else:
                raise FeatureMismatch(column=name, problem=f"kind {kind!r} is not numeric, bool or categorical")

        target_name = manifest["target"]
        target_kind = kinds[target_name]
        if target_kind == "bool":
            classes: tuple[Any, ...] = (False, True)
        elif target_kind == "categorical":
            classes = tuple(categories.get(target_name, ()))
        else:
            values = table.column(target_name).to_numpy(zero_copy_only=False)
            if values.dtype.kind == "f" and not np.all(np.equal(np.mod(values, 1), 0)):
                raise FeatureMismatch(
                    column=target_name,
                    problem="target has fractional values; rayops models are classifiers (bool, categorical or integer targets)",
                )
            classes = tuple(int(v) for v in np.unique(values))
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
        return cls(columns=columns, target=TargetSpec(name=t["name"], kind=t["kind"], classes=tuple(t["classes"])))

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
    def classes(self) -> list[Any]:
        return list(self.target.classes)

    @property
    def num_classes(self) -> int:
        return len(self.target.classes)

    def transform(self, rows: Any) -> np.ndarray:
        """(n, num_features) float32 inputs for `rows` (Table, DataFrame, dict of columns, list of dicts)."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        table = _to_table(rows, columns=self.input_columns)
        out = np.zeros((table.num_rows, self.num_features), dtype=np.float32)
        at = 0
        for col in self.columns:
            values = table.column(col.name)
            if col.kind == "numeric":
                try:
                    numbers = values.cast(pa.float64())
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise FeatureMismatch(column=col.name, problem=f"expected numbers, got {values.type}") from exc
                array = numbers.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
                array = np.where(np.isnan(array), col.mean, array)
                out[:, at] = (array - col.mean) / col.std
                at += 1
            elif col.kind == "bool":
                try:
                    flags = pc.fill_null(values.cast(pa.bool_()), False)
                except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                    raise FeatureMismatch(column=col.name, problem=f"expected booleans, got {values.type}") from exc
                out[:, at] = flags.to_numpy(zero_copy_only=False)
                at += 1
            else:
                width = len(col.categories)
                if width:
                    strings = values.cast(pa.string()) if not pa.types.is_string(values.type) else values
                    index = pc.index_in(strings, value_set=pa.array(col.categories, pa.string()))
                    index = index.to_numpy(zero_copy_only=False)
                    known = ~np.isnan(index.astype(np.float64)) if index.dtype.kind == "f" else np.ones(len(index), bool)
                    rows_known = np.nonzero(known)[0]
                    out[rows_known, at + index[known].astype(np.int64)] = 1.0
                at += width
        return out

    def encode_target(self, rows: Any) -> np.ndarray:
        """int64 class indices of the target column of `rows`; unknown or null values raise."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        table = _to_table(rows, columns=[self.target.name])
        values = table.column(self.target.name)
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
        for name in columns:
            if name not in table.column_names:
                raise FeatureMismatch(column=name, problem=f"missing from the rows (they have: {', '.join(table.column_names)})")
        table = table.select(list(columns))
    return table


# -- the built-in model --------------------------------------------------------------------


class TabularMLP(nn.Module):
    """The built-in model: Linear -> ReLU -> Dropout per hidden layer, then one logit per class.

    Rebuilt from model.json as `TabularMLP(num_features, num_classes, hidden_sizes, dropout)`.
    """

    MODEL_CLASS = "airflow_provider_rayops.jobs.modeling:TabularMLP"

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        hidden_sizes: Sequence[int] = (64, 64),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = int(num_features)
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, int(hidden)), nn.ReLU(), nn.Dropout(float(dropout))]
            width = int(hidden)
        layers.append(nn.Linear(width, int(num_classes)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# -- checkpoints ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """How to rebuild a model from its state_dict: `Class(**kwargs)` with Class at `class_path`."""

    class_path: str
    kwargs: Mapping[str, Any]

    def build(self) -> Any:
        return import_object(self.class_path)(**dict(self.kwargs))


@dataclass
class LoadedCheckpoint:
    """What `load_checkpoint` read back: the module (CPU, eval mode), its encoder and training state."""

    model: Any
    encoder: FeatureEncoder
    state: dict[str, Any]
    model_spec: dict[str, Any]
    path: str
    optimizer_state: dict[str, Any] | None = None

    @property
    def epoch(self) -> int:
        return int(self.state.get("epoch", 0))


def unwrap_model(model: Any) -> Any:
    """The plain module inside a DDP / FSDP / torch.compile wrapper."""
    seen = set()
    while id(model) not in seen:
        seen.add(id(model))
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            break
        model = inner
    return model


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model: Any,
    encoder: FeatureEncoder,
    state: Mapping[str, Any],
    model_spec: ModelSpec | None = None,
    optimizer: Any = None,
    scaler: Any = None,
) -> Path:
    """Write a checkpoint folder at `path` following the contract above; returns the folder.

    With `model_spec` the weights go in as a state_dict (portable across code changes that keep
    the constructor); without it the whole module is pickled (its class must stay importable).
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    module = unwrap_model(model)
    if model_spec is not None:
        spec = {
            "format_version": ARTIFACT_FORMAT_VERSION,
            "format": "state_dict",
            "class": model_spec.class_path,
            "kwargs": dict(model_spec.kwargs),
        }
        weights = {k: v.detach().to("cpu") for k, v in module.state_dict().items()}
        torch.save(weights, folder / MODEL_FILE)
    else:
        spec = {
            "format_version": ARTIFACT_FORMAT_VERSION,
            "format": "module",
            "class": f"{type(module).__module__}:{type(module).__qualname__}",
            "kwargs": {},
        }
        torch.save(module, folder / MODEL_FILE)
    (folder / MODEL_SPEC_FILE).write_text(json.dumps(spec, sort_keys=True))
    (folder / ENCODER_FILE).write_text(json.dumps(encoder.to_json(), sort_keys=True))
    (folder / STATE_FILE).write_text(json.dumps(dict(state), sort_keys=True, default=_json_default))
    if optimizer is not None:
        torch.save(
            {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None},
            folder / OPTIMIZER_FILE,
        )
    return folder


def load_checkpoint(path: str | os.PathLike[str], *, with_optimizer: bool = False) -> LoadedCheckpoint:
    """Read a checkpoint folder (local path) written by `save_checkpoint`; the model is on CPU in eval mode."""

    folder = Path(path)
    for name in (MODEL_SPEC_FILE, MODEL_FILE, ENCODER_FILE):
        if not (folder / name).is_file():
            raise ModelArtifactError(
                where=str(folder),
                problem=f"no {name}; a rayops checkpoint holds {MODEL_SPEC_FILE}, {MODEL_FILE}, {ENCODER_FILE} and {STATE_FILE}",
            )
    spec = json.loads((folder / MODEL_SPEC_FILE).read_text())
    model = _load_model_file(folder / MODEL_FILE, spec, where=str(folder))
    encoder = FeatureEncoder.from_json((folder / ENCODER_FILE).read_text())
    state = json.loads((folder / STATE_FILE).read_text()) if (folder / STATE_FILE).is_file() else {}
    optimizer_state = None
    if with_optimizer and (folder / OPTIMIZER_FILE).is_file():
        optimizer_state = torch.load(folder / OPTIMIZER_FILE, map_location="cpu", weights_only=False)
    return LoadedCheckpoint(
        model=model, encoder=encoder, state=state, model_spec=spec, path=str(folder), optimizer_state=optimizer_state
    )


def _load_model_file(file: Path, spec: Mapping[str, Any], *, where: str) -> Any:
    version = int(spec.get("format_version", 0))
    if version != ARTIFACT_FORMAT_VERSION:
        raise ModelArtifactError(
            where=where, problem=f"{MODEL_SPEC_FILE} has format version {version}; this rayops reads {ARTIFACT_FORMAT_VERSION}"
        )
    if spec.get("format") == "state_dict":
        model = ModelSpec(class_path=spec["class"], kwargs=spec.get("kwargs") or {}).build()
        model.load_state_dict(torch.load(file, map_location="cpu", weights_only=True))
    elif spec.get("format") == "module":
        model = torch.load(file, map_location="cpu", weights_only=False)
    else:
        raise ModelArtifactError(
            where=where, problem=f"{MODEL_SPEC_FILE} format {spec.get('format')!r} is not state_dict or module"
        )
    model.eval()
    return model


def import_object(path: str) -> Any:
    """The object at "package.module:attribute" (attribute may be dotted)."""
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{path!r} is not of the form module:attribute")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


def _json_default(value: Any) -> Any:
    try:
        return value.item()  # numpy / torch scalars, outside any hot loop
    except AttributeError:
        raise TypeError(f"{type(value).__name__} is not JSON serializable") from None


# -- prediction ------------------------------------------------------------------------------


class Predictor:
    """A trained model with its encoder: raw rows in, class probabilities out.

    `predict_proba(rows)` returns an (n, num_classes) float64 array whose columns follow
    `classes` (for a bool target [False, True], so column 1 is the positive class);
    `predict(rows)` returns the most likely class of each row. Rows are anything
    `FeatureEncoder.transform` takes. Inference runs on CPU under `torch.inference_mode`.
    """

    def __init__(self, *, model: Any, encoder: FeatureEncoder, source: str, batch_size: int = 65536) -> None:
        self.model = model
        self.encoder = encoder
        self.source = source
        self.batch_size = batch_size
        with contextlib.suppress(NotImplementedError):  # a torch.export graph has no train mode to leave
            self.model.eval()

    @property
    def classes(self) -> list[Any]:
        return self.encoder.classes

    def logits(self, rows: Any) -> np.ndarray:
        import numpy as np

        features = self.encoder.transform(rows)
        outputs = []
        with torch.inference_mode():
            for start in range(0, len(features), self.batch_size):
                batch = torch.from_numpy(features[start : start + self.batch_size])
                outputs.append(self.model(batch).float().cpu().numpy())
        if not outputs:
            return np.zeros((0, self.encoder.num_classes), dtype=np.float32)
        return np.concatenate(outputs)

    def predict_proba(self, rows: Any) -> np.ndarray:
        return probabilities(self.logits(rows), self.encoder.num_classes)

    def predict(self, rows: Any) -> np.ndarray:
        import numpy as np

        index = self.predict_proba(rows).argmax(axis=1)
        return np.asarray(self.classes, dtype=object)[index]


def probabilities(logits: np.ndarray, num_classes: int) -> np.ndarray:
    """Class probabilities (n, num_classes) from model logits (n, k) or one binary logit (n,) / (n, 1)."""
    import numpy as np

    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 1 or logits.shape[1] == 1:
        if num_classes != 2:
            raise ModelArtifactError(where="model output", problem=f"one logit per row, but the target has {num_classes} classes")
        positive = 1.0 / (1.0 + np.exp(-logits.reshape(-1)))
        return np.stack([1.0 - positive, positive], axis=1)
    if logits.shape[1] != num_classes:
        raise ModelArtifactError(where="model output", problem=f"{logits.shape[1]} logits per row for {num_classes} classes")
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def load_predictor(model_uri: str) -> Predictor:
    """A `Predictor` for `model_uri`:

    - an MLflow model URI (`models:/name@alias`, `models:/m-...`, `runs:/<id>/model`, or a
      local folder holding an MLmodel file) logged by the train job; or
    - a checkpoint folder (`file://...`, `s3://...` or a local path) holding model.json.

    MLflow reads the tracking URI from its environment (`MLFLOW_TRACKING_URI`).
    """
    from airflow_provider_rayops import storage

    scheme = model_uri.split("://", 1)[0] if "://" in model_uri else model_uri.split(":", 1)[0]
    if scheme in ("file", "s3") or Path(model_uri).exists():
        if scheme == "s3":
            with tempfile.TemporaryDirectory(prefix="rayops-model-") as tmp:
                _download_folder(model_uri, tmp)
                return _predictor_from_folder(Path(tmp), source=model_uri)
        local = Path(storage.parse_uri(model_uri).path) if scheme == "file" else Path(model_uri)
        return _predictor_from_folder(local, source=model_uri)
    import mlflow

    with tempfile.TemporaryDirectory(prefix="rayops-model-") as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        return _predictor_from_folder(local, source=model_uri)


def _predictor_from_folder(folder: Path, *, source: str) -> Predictor:
    if (folder / "MLmodel").is_file():
        import mlflow.pytorch

        encoder_file = folder / MLFLOW_EXTRA_FILES_DIR / ENCODER_FILE
        if not encoder_file.is_file():
            raise ModelArtifactError(
                where=source,
                problem=f"an MLflow model without {MLFLOW_EXTRA_FILES_DIR}/{ENCODER_FILE}; was it logged by the rayops train job?",
            )
        model = mlflow.pytorch.load_model(str(folder), map_location="cpu")
        return Predictor(model=model, encoder=FeatureEncoder.from_json(encoder_file.read_text()), source=source)
    if (folder / MODEL_SPEC_FILE).is_file():
        loaded = load_checkpoint(folder)
        return Predictor(model=loaded.model, encoder=loaded.encoder, source=source)
    raise ModelArtifactError(
        where=source, problem=f"neither an MLflow model (MLmodel) nor a rayops checkpoint ({MODEL_SPEC_FILE})"
    )


def _download_folder(uri: str, dest: str) -> None:
    from airflow_provider_rayops import storage

    prefix = uri.rstrip("/") + "/"
    for child in storage.list_uris(uri):
        relative = child[len(prefix) :] if child.startswith(prefix) else child.rsplit("/", 1)[-1]
        target = Path(dest) / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(storage.read_bytes(child))


def copy_checkpoint_files(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Copy a checkpoint folder's contract files (not optimizer state) into `dest`."""
    Path(dest).mkdir(parents=True, exist_ok=True)
    for name in (MODEL_SPEC_FILE, MODEL_FILE, ENCODER_FILE, STATE_FILE):
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, Path(dest) / name)
