"""Checkpoint folders (the artifact contract in the package docstring): `save_checkpoint`
writes one, `load_checkpoint` reads it back as a module on CPU with its encoder and training
state, `copy_checkpoint_files` copies one without its optimizer state.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from airflow_provider_rayops.jobs.modeling.artifacts import (
    ARTIFACT_FORMAT_VERSION,
    ENCODER_FILE,
    MODEL_FILE,
    MODEL_SPEC_FILE,
    OPTIMIZER_FILE,
    STATE_FILE,
    ModelArtifactError,
)
from airflow_provider_rayops.jobs.modeling.features import FeatureEncoder
from airflow_provider_rayops.jobs.runtime import import_object


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


def _json_default(value: Any) -> Any:
    try:
        return value.item()  # numpy / torch scalars, outside any hot loop
    except AttributeError:
        raise TypeError(f"{type(value).__name__} is not JSON serializable") from None


def copy_checkpoint_files(src: str | os.PathLike[str], dest: str | os.PathLike[str]) -> None:
    """Copy a checkpoint folder's contract files (not optimizer state) into `dest`."""
    Path(dest).mkdir(parents=True, exist_ok=True)
    for name in (MODEL_SPEC_FILE, MODEL_FILE, ENCODER_FILE, STATE_FILE):
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, Path(dest) / name)
