"""Prediction: `load_predictor(model_uri)` gives a `Predictor` (raw rows in, class probabilities
or predicted values out) for a model the train job logged to MLflow, or for a checkpoint folder.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from airflow_provider_rayops.jobs.modeling.artifacts import (
    ENCODER_FILE,
    MLFLOW_EXTRA_FILES_DIR,
    MODEL_SPEC_FILE,
    ModelArtifactError,
)
from airflow_provider_rayops.jobs.modeling.checkpoints import load_checkpoint
from airflow_provider_rayops.jobs.modeling.features import FeatureEncoder

if TYPE_CHECKING:
    import numpy as np


class Predictor:
    """A trained model with its encoder: raw rows in, class probabilities or values out.

    Classification: `predict_proba(rows)` returns an (n, num_classes) float64 array whose columns
    follow `classes` (for a bool target [False, True], so column 1 is the positive class);
    `predict(rows)` returns the most likely class of each row, in the target's own type.
    Regression: `predict(rows)` returns float64 values in the target's units; there are no
    probabilities. Rows are anything `FeatureEncoder.transform` takes. Inference runs on CPU
    under `torch.inference_mode`.
    """

    def __init__(self, *, model: Any, encoder: FeatureEncoder, source: str, batch_size: int = 65536) -> None:
        self.model = model
        self.encoder = encoder
        self.source = source
        self.batch_size = batch_size
        with contextlib.suppress(NotImplementedError):  # a torch.export graph has no train mode to leave
            self.model.eval()

    @property
    def task(self) -> str:
        return self.encoder.task

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
            return np.zeros((0, self.encoder.num_outputs), dtype=np.float32)
        return np.concatenate(outputs)

    def predict_proba(self, rows: Any) -> np.ndarray:
        if self.task == "regression":
            raise TypeError(f"{self.source} is a regression model: it predicts values (predict), not class probabilities")
        return probabilities(self.logits(rows), self.encoder.num_classes)

    def predict(self, rows: Any) -> np.ndarray:
        if self.task == "regression":
            outputs = self.logits(rows)
            if outputs.ndim == 2 and outputs.shape[1] != 1:
                raise ModelArtifactError(
                    where="model output", problem=f"{outputs.shape[1]} values per row for a regression target"
                )
            return self.encoder.decode_target(outputs)
        return self.decode_classes(self.predict_proba(rows).argmax(axis=1))

    def decode_classes(self, index: np.ndarray) -> np.ndarray:
        """Class indices to classes, in the target's own type: an integer target predicts
        integers, a bool one booleans."""
        import numpy as np

        classes = np.asarray(self.classes, dtype=object)[index]
        if self.encoder.target.kind == "numeric":
            return classes.astype(np.int64)
        if self.encoder.target.kind == "bool":
            return classes.astype(bool)
        return classes


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
    from airflow_provider_rayops.jobs import tracking

    scheme = model_uri.split("://", 1)[0] if "://" in model_uri else model_uri.split(":", 1)[0]
    if scheme in ("file", "s3") or Path(model_uri).exists():
        if scheme == "s3":
            with tempfile.TemporaryDirectory(prefix="rayops-model-") as tmp:
                storage.download_folder(model_uri, tmp)
                return _predictor_from_folder(Path(tmp), source=model_uri)
        local = Path(storage.parse_uri(model_uri).path) if scheme == "file" else Path(model_uri)
        return _predictor_from_folder(local, source=model_uri)
    with tempfile.TemporaryDirectory(prefix="rayops-model-") as tmp:
        return _predictor_from_folder(tracking.download_artifacts(model_uri, tmp), source=model_uri)


def _predictor_from_folder(folder: Path, *, source: str) -> Predictor:
    pyfunc_artifacts = folder / "artifacts" / "model"  # mlflow_model.ARTIFACT_KEY, under MLflow's artifacts/
    if (folder / "MLmodel").is_file() and (pyfunc_artifacts / ENCODER_FILE).is_file():
        from airflow_provider_rayops.jobs.modeling import mlflow_model

        return mlflow_model.load_network_folder(pyfunc_artifacts, source=source)
    if (folder / "MLmodel").is_file():
        # Models logged before the pyfunc (the PyTorch flavour with extra_files/): champions
        # registered then are still compared with and served.
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
