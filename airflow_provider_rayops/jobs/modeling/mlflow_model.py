"""The MLflow model every trained version is logged as: a standard pyfunc that takes raw rows.

    import mlflow
    model = mlflow.pyfunc.load_model("models:/churn@champion")
    model.predict(pandas.DataFrame([{"tenure_months": 3, "plan": "basic", ...}]))

works wherever the model's requirements are installed (its requirements.txt: torch, numpy,
pandas, pyarrow, mlflow-skinny), with no rayops installed: the few modules it needs (the feature
encoder and the predictor) travel inside the model as MLflow `code_paths`. So `mlflow models
serve`, batch scoring and Spark UDFs use what the pipeline registers.

The logged model folder ("model"):

    MLmodel             the python_function flavour, "models from code": MLflow runs
                        mlflow_entry.py to build the model, so loading unpickles no Python object
    code/airflow_provider_rayops/...   the modules below, nothing else of rayops
    artifacts/model/    encoder.json (what each input column means), and the network:
                        network.pt2 (torch.export, needs no model class), or, for a network
                        torch.export cannot trace, the checkpoint's model.json and model.pt:
                        loading such a model needs its class importable (rayops' own
                        TabularMLP travels in code/; a custom loop's model class does not)
    requirements.txt, python_env.yaml, input_example.json, serving_input_example.json

Input: a DataFrame with the snapshot's feature columns (`input_schema`: the names and the types
as ingested; nulls are allowed, and filled as in training). Extra columns are ignored. MLflow
enforces the types as it does for every model: a whole-number column that had nulls is `double`
(pandas holds it as floats), and a Python caller passes floats there; JSON callers (`mlflow
models serve`) may send whole numbers for a `double` column.
Output: a DataFrame with `prediction` in the target's own type (an integer target predicts
integers) and, for classification, one `probability_<class>` column per class.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlflow.pyfunc import PythonModel

from airflow_provider_rayops.jobs.modeling.artifacts import ENCODER_FILE, MODEL_FILE, MODEL_SPEC_FILE, ModelArtifactError
from airflow_provider_rayops.jobs.modeling.checkpoints import load_checkpoint
from airflow_provider_rayops.jobs.modeling.features import FeatureEncoder
from airflow_provider_rayops.jobs.modeling.predictor import Predictor

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa
    from mlflow import MlflowClient
    from mlflow.types.schema import Schema

logger = logging.getLogger(__name__)

# The name of the MLflow artifact that holds the encoder and the network (artifacts/model/).
ARTIFACT_KEY = "model"
NETWORK_FILE = "network.pt2"
PREDICTION_COLUMN = "prediction"
PROBABILITY_PREFIX = "probability_"
# What travels in code/: the package root and the modules the model imports, relative to it.
PACKAGE = Path(__file__).resolve().parents[2]
SHIPPED_MODULES = (
    "__init__.py",
    "jobs/__init__.py",
    "jobs/runtime.py",
    "jobs/modeling/__init__.py",
    "jobs/modeling/artifacts.py",
    "jobs/modeling/checkpoints.py",
    "jobs/modeling/features.py",
    "jobs/modeling/network.py",
    "jobs/modeling/predictor.py",
    "jobs/modeling/mlflow_model.py",
)
ENTRY_FILE = Path(__file__).with_name("mlflow_entry.py")
REQUIREMENTS = ("torch", "numpy", "pandas", "pyarrow", "mlflow-skinny")


class RayopsModel(PythonModel):
    """The pyfunc: raw rows in, predictions (and class probabilities) out."""

    def load_context(self, context: Any) -> None:
        self.predictor = load_network_folder(Path(context.artifacts[ARTIFACT_KEY]))

    def predict(self, context: Any, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        return predictions_frame(self.predictor, model_input)


def predictions_frame(predictor: Predictor, rows: Any) -> pd.DataFrame:
    """The pyfunc's output for `rows`: `prediction`, and `probability_<class>` per class."""
    import pandas as pd

    if predictor.task == "regression":
        return pd.DataFrame({PREDICTION_COLUMN: predictor.predict(rows)})
    proba = predictor.predict_proba(rows)
    out = {PREDICTION_COLUMN: predictor.decode_classes(proba.argmax(axis=1))}
    for i, label in enumerate(predictor.classes):
        out[f"{PROBABILITY_PREFIX}{label}"] = proba[:, i]
    return pd.DataFrame(out)


def load_network_folder(folder: Path, *, source: str | None = None) -> Predictor:
    """The Predictor in an artifacts/model folder: encoder.json and network.pt2, or the checkpoint
    files; `source` names it in errors (default: the folder)."""
    import torch

    encoder_file = folder / ENCODER_FILE
    if not encoder_file.is_file():
        raise ModelArtifactError(where=str(folder), problem=f"no {ENCODER_FILE}; was the model logged by the rayops train job?")
    encoder = FeatureEncoder.from_json(encoder_file.read_text())
    if (folder / NETWORK_FILE).is_file():
        network = torch.export.load(str(folder / NETWORK_FILE)).module()
        return Predictor(model=network, encoder=encoder, source=source or str(folder))
    if (folder / MODEL_SPEC_FILE).is_file():
        return Predictor(model=load_checkpoint(folder).model, encoder=encoder, source=source or str(folder))
    raise ModelArtifactError(where=str(folder), problem=f"neither {NETWORK_FILE} nor {MODEL_SPEC_FILE} and {MODEL_FILE}")


# -- the signature ----------------------------------------------------------------------------


def input_schema(manifest: Mapping[str, Any], encoder: FeatureEncoder) -> Schema:
    """The columns the model reads, typed as ingested: whole numbers `long` (`double` where the
    snapshot had nulls: pandas holds such a column as floats), numbers `double`, bool `boolean`,
    text and categories `string`."""
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    described = {c["name"]: c for c in manifest["columns"]}
    specs: list[ColSpec | TensorSpec] = []
    for name in encoder.input_columns:
        column = described.get(name, {})
        specs.append(
            ColSpec(_mlflow_type(str(column.get("type", "")), column.get("kind", ""), int(column.get("nulls") or 0)), name)
        )
    return Schema(specs)


def output_schema(encoder: FeatureEncoder) -> Schema:
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    if encoder.task == "regression":
        return Schema([ColSpec("double", PREDICTION_COLUMN)])
    # Classes keep the target's type: a numeric target's classes are whole numbers.
    kind = {"bool": "boolean", "categorical": "string"}.get(encoder.target.kind, "long")
    columns: list[ColSpec | TensorSpec] = [ColSpec(kind, PREDICTION_COLUMN)]
    columns += [ColSpec("double", f"{PROBABILITY_PREFIX}{label}") for label in encoder.classes]
    return Schema(columns)


def _mlflow_type(arrow_type: str, kind: str, nulls: int) -> str:
    if kind == "bool" or arrow_type == "bool":
        return "boolean"
    if arrow_type.startswith(("int", "uint")):
        return "double" if nulls else "long"
    if arrow_type in ("double", "float", "halffloat") or kind == "numeric":
        return "double"
    return "string"


# -- logging ----------------------------------------------------------------------------------


def log_model(
    mlflow_client: MlflowClient,
    run_id: str,
    *,
    name: str,
    experiment_id: str,
    model: Any,
    encoder: FeatureEncoder,
    checkpoint_folder: Path,
    manifest: Mapping[str, Any],
    example_rows: pa.Table,
    step: int = 0,
    tags: Mapping[str, str],
    model_format_tag: str,
) -> str:
    """Log the run's model `name` (this module's docstring says what it holds), with `tags`, and
    `model_format_tag` set to how the network is stored ("pt2" or "checkpoint"); returns its URI."""
    import mlflow.pyfunc
    from mlflow.models import Model, ModelSignature

    example = example_rows.select(encoder.input_columns).to_pandas()
    with tempfile.TemporaryDirectory(prefix="rayops-mlflow-model-") as tmp:
        folder = Path(tmp) / ARTIFACT_KEY
        folder.mkdir()
        shutil.copy2(checkpoint_folder / ENCODER_FILE, folder / ENCODER_FILE)
        model_format = _write_network(model, encoder, example, folder, checkpoint_folder)
        code = _code_folder(Path(tmp) / "code")
        # Created first, in the run's experiment: left to Model.log, a model logged by run id
        # without an active run lands in the default experiment.
        logged = mlflow_client.create_logged_model(experiment_id, name=name, source_run_id=run_id, tags=dict(tags))
        info = Model.log(
            artifact_path=None,
            name=name,
            flavor=mlflow.pyfunc,  # the module: Model.log calls its save_model
            run_id=run_id,  # no active run needed, the run stays open
            model_id=logged.model_id,
            step=step,
            python_model=str(ENTRY_FILE),
            artifacts={ARTIFACT_KEY: str(folder)},
            code_paths=[str(code)],
            signature=ModelSignature(inputs=input_schema(manifest, encoder), outputs=output_schema(encoder)),
            input_example=example,
            pip_requirements=pip_requirements(),
        )
    mlflow_client.set_logged_model_tags(logged.model_id, {model_format_tag: model_format})
    return str(info.model_uri)


def _write_network(model: Any, encoder: FeatureEncoder, example: pd.DataFrame, folder: Path, checkpoint_folder: Path) -> str:
    """network.pt2 when torch.export can trace the model with a free batch size and the exported
    program answers as the module does ("pt2"); else the checkpoint's files ("checkpoint")."""
    import numpy as np
    import torch

    features = encoder.transform(example)
    # Batches of 1 and 7 rows (from the example, repeated): torch.export makes a batch of one a
    # constant, so the traced one has two or more rows, and both sizes are checked afterwards.
    traced, one, seven = (torch.from_numpy(features[np.arange(n) % len(features)]) for n in (max(2, len(features)), 1, 7))
    model = model.to("cpu").eval()
    try:
        # DYNAMIC, not AUTO: a model that fixes its batch size fails here instead of being exported for one size.
        program = torch.export.export(model, (traced,), dynamic_shapes=[{0: torch.export.Dim.DYNAMIC}])
        exported = program.module()
        with torch.inference_mode():
            for batch in (one, seven):
                if not torch.allclose(exported(batch).float(), model(batch).float(), rtol=1e-4, atol=1e-5):
                    raise ValueError(f"the exported program answers a batch of {len(batch)} differently from the module")
        torch.export.save(program, str(folder / NETWORK_FILE))
        return "pt2"
    except Exception as exc:  # a module torch.export cannot trace (data-dependent control flow...)
        logger.warning(
            "torch.export could not export the model (%s: %s); logging the checkpoint's files instead: loading this "
            "model needs the model's class importable (and, for a pickled module, unpickles it)",
            type(exc).__name__,
            exc,
        )
        (folder / NETWORK_FILE).unlink(missing_ok=True)
        for name in (MODEL_SPEC_FILE, MODEL_FILE):
            shutil.copy2(checkpoint_folder / name, folder / name)
        return "checkpoint"


def _code_folder(dest: Path) -> Path:
    """A copy of the package's modules the model imports, as the package `airflow_provider_rayops`."""
    root = dest / PACKAGE.name
    for relative in SHIPPED_MODULES:
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PACKAGE / relative, target)
    return root


def pip_requirements() -> list[str]:
    """The model's requirements, pinned to what the train job ran (given explicitly: inferring them
    would load the model in a subprocess)."""
    from importlib import metadata

    def _pin(dist: str) -> str:
        try:
            return f"{dist}=={metadata.version(dist).split('+')[0]}"
        except metadata.PackageNotFoundError:
            return dist

    return [_pin(dist) for dist in REQUIREMENTS]
