"""The evaluate stage (a Ray job): a trained model scored on the validation snapshot, beside the champion.

    python -m airflow_provider_rayops.jobs.evaluate      # args in RAYOPS_JOB_ARGS (JSON)

Job arguments:

    model_uri          the candidate: the train (or tune) job's `model_uri` (`models:/m-...`), any MLflow
                       model URI (`runs:/<id>/model`, `models:/<name>/<version>`, `models:/<name>@<alias>`)
                       or a rayops checkpoint folder (file://, s3://, local path); see modeling.load_predictor
    snapshot_uri       the ingest snapshot; its validation split is what every model is scored on
    mlflow_run_id      optional: the training run that receives the eval metrics and evaluation.json
                       (null: nothing is logged, the result still comes back)
    metrics            overall metrics to compute (YAML `evaluate.metrics`), from KNOWN_METRICS:
                       accuracy, balanced_accuracy, auc, precision, recall, f1, log_loss for
                       classification; rmse, mae, r2, mape for regression. null: the model's task
                       kind's defaults (accuracy, auc / rmse, mae, r2); metrics of the other kind
                       are refused
    registered_model   optional: the MLflow registered model whose champion is compared
    champion_alias     the champion's alias (default "champion"): `models:/<registered_model>@<alias>`
    latency            {batch_size: 256, batches: 50, warmup: 5}
    predictions_folder optional: where validation_predictions.parquet is written (see predictions_uri)

Result (the `::rayops-result::` line, and evaluation.json on the run), `format_version` 1:

    {
      "format_version": 1,
      "model_uri": str,                          # as given
      "snapshot_uri": str, "snapshot_hash": str, # the data every number below was measured on
      "split": "validation", "rows": int,
      "task": "classification" | "regression",   # the model's (its snapshot's) task kind; an
                                                 # evaluation.json without it (before regression) is
                                                 # classification
      "classes": [str, ...],                     # str(label) in the model's class order; [] for regression
      "positive_class": str | null,              # binary: classes[1] (True for a bool target); else null
      "metric_directions": {name: "max" | "min"},# per requested metric: which way is better
      "metrics": {name: float | null, ...},      # exactly the requested names; null when undefined on
                                                 # this data (e.g. auc with one class present)
      "per_class": {label: {"precision", "recall", "f1": float, "support": int}},   # every class; {} for regression
      "latency": {"batch_size", "batches", "warmup": int, "p50_ms", "p95_ms", "mean_ms", "max_ms": float,
                  "device": "cpu", "threads": int},
      "model_size_bytes": int, "model_size_mb": float,   # all files of the model folder; MB = 10**6 bytes
      "champion": null | {                       # null: no registered model / no such alias / not asked
          "registered_model": str, "alias": str, "version": str, "run_id": str | null,
          "model_uri": "models:/<name>/<version>",
          "same_as_candidate": bool,             # the alias points at the candidate itself (told by the
                                                 # logged model id or registered version; a runs:/ URI
                                                 # is never taken for the champion); then the candidate's
                                                 # numbers are reused and every gain is 0
          "error": str | null,                   # set when the champion cannot be scored on this data
                                                 # (then metrics/per_class/latency/model_size_* are null)
          "metrics": {...}, "per_class": {...}, "latency": {...}, "model_size_bytes", "model_size_mb"
      },
      "champion_absent_reason": str | null,      # why champion is null (null when a champion was found)
      "gain_over_champion": {name: float | null} | null,
                                                 # improvement over the champion: candidate - champion for
                                                 # "max" metrics, champion - candidate for "min" ones
                                                 # (log_loss, rmse, mae, mape): above 0 is better either
                                                 # way; null when there is no scored champion
      "mlflow_run_id": str | null, "tracking_uri": str,
      "evaluation_uri": str | null,              # runs:/<mlflow_run_id>/evaluation.json
      "predictions_uri": str | null              # with predictions_folder: the model's outputs on the
                                                 # validation split (prediction, probability_<class>:
                                                 # the inference log's columns), the reference of the
                                                 # monitor's prediction drift; also the run's
                                                 # rayops.eval.predictions_uri tag
    }

How the numbers are made:

- Every model predicts from the raw validation rows with its own encoder: a classifier through
  `modeling.Predictor.predict_proba` (the predicted class is the most likely one), a regressor
  through `Predictor.predict` (values in the target's units).
- precision / recall / f1 overall: of the positive class for a binary target, macro averages over
  all classes otherwise. auc: ROC AUC of the positive class for binary, one-vs-rest macro average
  (over the classes present in the data) for multiclass. log_loss: natural log, probabilities
  clipped at float64 eps.
- Regression, in the target's units: rmse = sqrt(mean((y - pred)^2)), mae = mean(|y - pred|),
  r2 = 1 - SSE/SST (null when the target is constant), mape = mean(|y - pred| / |y|) over the
  rows whose target is not 0, as a fraction (0.12 is 12%; null when every target is 0).
- Latency: wall time of one `predict_proba` call (`predict` for regression) on `batch_size` raw
  rows (pyarrow slices of the validation split, cycled), after `warmup` untimed calls; p50/p95
  over `batches` calls, in ms.
  It covers encoding and the forward pass on this process's CPU, not HTTP or JSON.

Logged on the training run (never a new run; a retry logs the same keys again, the last wins):
metrics `eval_<metric>`, `eval_<precision|recall|f1|support>_class_<label>`, `eval_latency_p50_ms`,
`eval_latency_p95_ms`, `eval_model_size_mb`, `eval_champion_<metric>`, `eval_gain_<metric>` (labels
with characters MLflow refuses in keys get "_" there; the JSON keeps them exact), tags
`rayops.eval.*`, and the artifact `evaluation.json` (the result above).

Wrong input fails with a `JobInputError` naming it: an unknown metric, a snapshot or model URI with
nothing there, a training run that does not exist, validation rows lacking a model input column.
The metrics are plain numpy: scikit-learn's give the same numbers, but importing sklearn.metrics
alone adds about a second to every job (benchmarks/EVALUATE_RESULTS.md).
"""

from __future__ import annotations

import io
import math
import re
import statistics
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_rayops import storage
from airflow_provider_rayops import tag_names as names
from airflow_provider_rayops.config.schema import DEFAULT_METRICS, EVALUATION_METRICS, METRIC_TASK
from airflow_provider_rayops.jobs import contracts, tracking
from airflow_provider_rayops.jobs.metrics import binary_auc, classification_metrics, regression_metrics
from airflow_provider_rayops.jobs.modeling.artifacts import ModelArtifactError
from airflow_provider_rayops.jobs.modeling.features import FeatureMismatch, target_values
from airflow_provider_rayops.jobs.modeling.predictor import Predictor, load_predictor
from airflow_provider_rayops.jobs.runtime import JobInputError, phase, run_job
from airflow_provider_rayops.registry.champion import find_champion, model_identity

if TYPE_CHECKING:
    import pyarrow as pa
    from mlflow import MlflowClient

FORMAT_VERSION = 1
VALIDATION_SPLIT = "validation"
EVALUATION_ARTIFACT = "evaluation.json"
PREDICTIONS_FILE = "validation_predictions.parquet"
METRIC_PREFIX = "eval_"
MB = 1_000_000
PER_CLASS_METRICS = ("precision", "recall", "f1", "support")
# name -> which way is better; the order is the documented one.
KNOWN_METRICS: dict[str, str] = EVALUATION_METRICS  # one list for the YAML schema and this job
_MLFLOW_NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "ENDPOINT_NOT_FOUND"}
_MLFLOW_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_\-. :/]")


# -- arguments ---------------------------------------------------------------------------------


# -- data --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValidationData:
    snapshot_uri: str
    snapshot_hash: str
    rows: pa.Table


def load_validation(uri: str) -> ValidationData:
    """The validation split of the snapshot at `uri`; JobInputError naming the URI when it is not there."""
    import pyarrow.parquet as pq

    uri = storage.resolve_uri(uri)
    try:
        manifest = storage.read_manifest(uri)
        if manifest is None:
            raise JobInputError(
                f"job argument 'snapshot_uri'={uri!r}: no snapshot there (no manifest.json); run the ingest stage first"
            )
        table = pq.read_table(io.BytesIO(storage.read_bytes(storage.join_uri(uri, f"{VALIDATION_SPLIT}.parquet"))))
    except storage.StorageError as exc:
        raise JobInputError(f"job argument 'snapshot_uri'={uri!r}: {exc}") from None
    if table.num_rows == 0:
        raise JobInputError(f"job argument 'snapshot_uri'={uri!r}: the validation split has no rows")
    content_hash = str(manifest.get("content_hash") or uri.rstrip("/").rsplit("/", 1)[-1])
    return ValidationData(snapshot_uri=uri, snapshot_hash=content_hash, rows=table)


# -- models ------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    uri: str
    predictor: Predictor
    size_bytes: int


class ModelNotFound(Exception):
    """Nothing loadable at a model URI (as opposed to a tracking server that cannot be reached)."""


def load_model(uri: str) -> LoadedModel:
    """The predictor at `uri` and the size of its files; ModelNotFound when nothing is there."""
    scheme = uri.split("://", 1)[0] if "://" in uri else uri.split(":", 1)[0]
    with tempfile.TemporaryDirectory(prefix="rayops-eval-model-") as tmp:
        try:
            if scheme == "file" or (scheme not in ("s3", "models", "runs", "mlflow-artifacts") and Path(uri).exists()):
                folder = Path(storage.parse_uri(uri).path) if scheme == "file" else Path(uri)
                if not folder.is_dir():
                    raise ModelNotFound(f"no model folder at {uri}")
            elif scheme == "s3":
                folder = Path(tmp)
                if not storage.download_folder(uri, folder):
                    raise ModelNotFound(f"no files under {uri}")
            else:
                folder = _download_mlflow(uri, Path(tmp))
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            # A local folder: load_predictor reads it in place, nothing is downloaded twice.
            predictor = load_predictor(str(folder))
        except ModelArtifactError as exc:
            raise ModelNotFound(f"{uri}: {exc.problem}") from None
        except storage.StorageError as exc:
            raise ModelNotFound(str(exc)) from None
    predictor.source = uri
    return LoadedModel(uri=uri, predictor=predictor, size_bytes=size)


def _download_mlflow(uri: str, dest: Path) -> Path:
    """The MLflow model at `uri`, downloaded under `dest`; ModelNotFound when nothing is there."""
    from mlflow.exceptions import MlflowException

    try:
        return tracking.download_artifacts(uri, dest)
    except MlflowException as exc:
        if exc.error_code in _MLFLOW_NOT_FOUND or "not found" in str(exc).lower() or "does not exist" in str(exc).lower():
            raise ModelNotFound(f"{uri}: {exc.message}") from None
        raise
    except OSError as exc:  # a run without that artifact path
        raise ModelNotFound(f"{uri}: {exc}") from None


def check_columns(predictor: Predictor, rows: pa.Table, *, what: str) -> None:
    """FeatureMismatch naming the first column the model reads (inputs or target) that `rows` lack."""
    for name in [*predictor.encoder.input_columns, predictor.encoder.target.name]:
        if name not in rows.column_names:
            raise FeatureMismatch(
                column=name, problem=f"{what} reads it, but the validation rows have only: {', '.join(rows.column_names)}"
            )


def measure_latency(predictor: Predictor, rows: pa.Table, spec: contracts.LatencySpec) -> dict[str, Any]:
    """p50/p95 wall time of predict_proba (predict for regression) on `spec.batch_size` raw rows,
    after `spec.warmup` calls."""
    import numpy as np
    import torch

    n = rows.num_rows
    if n >= spec.batch_size:
        batches = [rows.slice(start, spec.batch_size) for start in range(0, n - spec.batch_size + 1, spec.batch_size)]
    else:  # fewer rows than one batch: repeat them (take copies, but before any timing)
        batches = [rows.take(np.arange(spec.batch_size) % n)]
    predict = predictor.predict if predictor.task == "regression" else predictor.predict_proba
    for i in range(spec.warmup):
        predict(batches[i % len(batches)])
    times_ms = []
    for i in range(spec.batches):
        batch = batches[i % len(batches)]
        start = time.perf_counter()
        predict(batch)
        times_ms.append((time.perf_counter() - start) * 1000.0)
    return {
        "batch_size": spec.batch_size,
        "batches": spec.batches,
        "warmup": spec.warmup,
        "p50_ms": float(np.percentile(times_ms, 50)),
        "p95_ms": float(np.percentile(times_ms, 95)),
        "mean_ms": float(statistics.fmean(times_ms)),
        "max_ms": float(max(times_ms)),
        "device": "cpu",
        "threads": int(torch.get_num_threads()),
    }


def score(
    model: LoadedModel, data: ValidationData, spec: contracts.EvaluateArgs, *, metrics: Sequence[str], what: str
) -> dict[str, Any]:
    """Metrics, per-class metrics, latency and size of one model on the validation rows.
    FeatureMismatch when the rows do not fit the model."""
    predictor = model.predictor
    check_columns(predictor, data.rows, what=what)
    if predictor.task == "regression":
        y_values = target_values(data.rows, predictor.encoder.target.name)
        scored: dict[str, Any] = {"metrics": regression_metrics(y_values, predictor.predict(data.rows), metrics), "per_class": {}}
    else:
        y = predictor.encoder.encode_target(data.rows)
        scored = classification_metrics(y, predictor.predict_proba(data.rows), predictor.classes, metrics)
    return {
        **scored,
        "latency": measure_latency(predictor, data.rows, spec.latency),
        "model_size_bytes": model.size_bytes,
        "model_size_mb": model.size_bytes / MB,
    }


# -- the champion ------------------------------------------------------------------------------
# Which version is the champion and whether the candidate is it: registry/champion.py. Scoring it: here.


def evaluate_champion(
    client: MlflowClient,
    spec: contracts.EvaluateArgs,
    data: ValidationData,
    candidate: dict[str, Any],
    *,
    task: str = "classification",
    metrics: Sequence[str] = ("accuracy", "auc"),
) -> tuple[dict[str, Any] | None, str | None]:
    """(champion block, None) or (None, why absent); see the module docstring for the block."""
    if not spec.registered_model:
        return None, "no registered_model given"
    version, absent = find_champion(client, spec.registered_model, spec.champion_alias)
    if version is None:
        return None, absent
    block: dict[str, Any] = {
        "registered_model": version.name,
        "alias": spec.champion_alias,
        "version": str(version.version),
        "run_id": version.run_id or None,
        # The version number, not the alias: the alias may move while this job runs.
        "model_uri": f"models:/{version.name}/{version.version}",
        "same_as_candidate": model_identity(client, spec.model_uri).same_as(version),
        "error": None,
    }
    if block["same_as_candidate"]:  # the same model on the same rows: its numbers are the candidate's
        return {
            **block,
            **{k: candidate[k] for k in ("metrics", "per_class", "latency", "model_size_bytes", "model_size_mb")},
        }, None
    try:
        champion = load_model(block["model_uri"])
        if champion.predictor.task != task:
            raise FeatureMismatch(
                column=champion.predictor.encoder.target.name,
                problem=f"the champion is a {champion.predictor.task} model and the candidate a {task} one",
            )
        scored = score(champion, data, spec, metrics=metrics, what=f"champion {block['model_uri']}")
    except (ModelNotFound, FeatureMismatch, ModelArtifactError) as exc:
        # The candidate is still evaluated; the promotion step decides what an unscored champion means.
        empty = {"metrics": None, "per_class": None, "latency": None, "model_size_bytes": None, "model_size_mb": None}
        return {**block, **empty, "error": str(exc)}, None
    return {**block, **scored}, None


def gain_over_champion(candidate: Mapping[str, Any], champion: Mapping[str, Any] | None) -> dict[str, float | None] | None:
    if champion is None or champion.get("metrics") is None:
        return None
    gains: dict[str, float | None] = {}
    for name, value in candidate.items():
        other = champion["metrics"].get(name)
        if value is None or other is None:
            gains[name] = None
        else:
            gains[name] = value - other if KNOWN_METRICS[name] == "max" else other - value
    return gains


# -- MLflow ------------------------------------------------------------------------------------


def check_run(client: MlflowClient, run_id: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        if exc.error_code in _MLFLOW_NOT_FOUND or exc.error_code == "INVALID_PARAMETER_VALUE":
            raise JobInputError(
                f"job argument 'mlflow_run_id'={run_id!r}: no such run in MLflow at {client.tracking_uri}"
            ) from None
        raise
    if run.info.lifecycle_stage == "deleted":
        raise JobInputError(f"job argument 'mlflow_run_id'={run_id!r}: the run is deleted in MLflow at {client.tracking_uri}")


def mlflow_key(*parts: str) -> str:
    return _MLFLOW_KEY_UNSAFE.sub("_", METRIC_PREFIX + "_".join(parts))


def eval_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The flat metric dict logged on the training run (names in the module docstring)."""
    out: dict[str, float] = {}
    for name, value in result["metrics"].items():
        out[mlflow_key(name)] = value
    for label, values in result["per_class"].items():
        for name in PER_CLASS_METRICS:
            out[mlflow_key(name, "class", label)] = values[name]
    out[mlflow_key("latency_p50_ms")] = result["latency"]["p50_ms"]
    out[mlflow_key("latency_p95_ms")] = result["latency"]["p95_ms"]
    out[mlflow_key("model_size_mb")] = result["model_size_mb"]
    champion = result["champion"]
    if champion is not None and champion["metrics"] is not None:
        for name, value in champion["metrics"].items():
            out[mlflow_key("champion", name)] = value
    for name, value in (result["gain_over_champion"] or {}).items():
        out[mlflow_key("gain", name)] = value
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


def log_evaluation(client: MlflowClient, run_id: str, result: Mapping[str, Any]) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, 0) for key, value in eval_metrics(result).items()]
    for start in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[start : start + 1000])
    champion = result["champion"]
    tracking.set_tags(
        client,
        run_id,
        {
            names.EVAL_SNAPSHOT_URI: result["snapshot_uri"],
            names.EVAL_SNAPSHOT_HASH: result["snapshot_hash"],
            names.EVAL_MODEL_URI: result["model_uri"],
            names.EVAL_CHAMPION: f"{champion['registered_model']}/{champion['version']}" if champion else "none",
            names.EVAL_PREDICTIONS_URI: result.get("predictions_uri"),
        },
    )
    client.log_dict(run_id, dict(result), EVALUATION_ARTIFACT)


def write_predictions(predictor: Any, rows: pa.Table, folder: str) -> str:
    """The model's outputs on `rows` as the endpoint answers them (`prediction`, `probability_<class>`:
    the columns of the inference log), written as `<folder>/validation_predictions.parquet`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from airflow_provider_rayops.jobs.modeling.mlflow_model import predictions_frame

    table = pa.Table.from_pandas(predictions_frame(predictor, rows), preserve_index=False)
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    uri = storage.join_uri(storage.resolve_uri(folder), PREDICTIONS_FILE)
    storage.write_bytes(uri, buffer.getvalue())
    return uri


# -- the job -----------------------------------------------------------------------------------


def metrics_for(task: str, asked: Sequence[str] | None) -> list[str]:
    """The metrics to compute for a model of `task`: `asked`, or the kind's defaults; JobInputError
    naming a metric of the other kind (the YAML's check cannot know a task inferred at ingest)."""
    if asked is None:
        return list(DEFAULT_METRICS[task])  # type: ignore[index]
    wrong = [name for name in asked if METRIC_TASK[name] != task]
    if wrong:
        fitting = ", ".join(name for name, kind in METRIC_TASK.items() if kind == task)
        raise JobInputError(
            f"evaluate.metrics {', '.join(map(repr, wrong))}: the model is a {task} model (the snapshot's task kind); "
            f"use {fitting}, or set train.task if ingest inferred the wrong kind"
        )
    return list(asked)


def main(args: Mapping[str, Any] | contracts.EvaluateArgs) -> dict[str, Any]:
    spec = contracts.EvaluateArgs.parse(args)
    with phase("snapshot"):
        data = load_validation(spec.snapshot_uri)
    with phase("mlflow"):
        client = tracking.client()  # also MLflow's global URI, which model downloads use
        if spec.mlflow_run_id:
            check_run(client, spec.mlflow_run_id)

    try:
        with phase("load model"):
            candidate_model = load_model(spec.model_uri)
    except ModelNotFound as exc:
        raise JobInputError(f"job argument 'model_uri'={spec.model_uri!r}: no model there ({exc})") from None
    task = candidate_model.predictor.task
    metrics = metrics_for(task, spec.metrics)
    try:
        with phase("score"):
            candidate = score(candidate_model, data, spec, metrics=metrics, what=f"model {spec.model_uri}")
    except FeatureMismatch as exc:
        raise JobInputError(f"snapshot {data.snapshot_uri} does not fit model {spec.model_uri}: {exc}") from None
    classes = [str(label) for label in candidate_model.predictor.classes]
    predictions_uri = None
    if spec.predictions_folder:
        with phase("predictions"):
            predictions_uri = write_predictions(candidate_model.predictor, data.rows, spec.predictions_folder)
    del candidate_model  # the champion loads next; one model in memory at a time

    with phase("champion"):
        champion, absent = evaluate_champion(client, spec, data, candidate, task=task, metrics=metrics)
    result: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "model_uri": spec.model_uri,
        "snapshot_uri": data.snapshot_uri,
        "snapshot_hash": data.snapshot_hash,
        "split": VALIDATION_SPLIT,
        "rows": data.rows.num_rows,
        "task": task,
        "classes": classes,
        "positive_class": classes[1] if len(classes) == 2 else None,
        "metric_directions": {name: KNOWN_METRICS[name] for name in metrics},
        **candidate,
        "champion": champion,
        "champion_absent_reason": absent,
        "gain_over_champion": gain_over_champion(candidate["metrics"], champion),
        "mlflow_run_id": spec.mlflow_run_id,
        "tracking_uri": client.tracking_uri,
        "evaluation_uri": f"runs:/{spec.mlflow_run_id}/{EVALUATION_ARTIFACT}" if spec.mlflow_run_id else None,
        "predictions_uri": predictions_uri,
    }
    result = contracts.EvaluateResult.model_validate(result).model_dump(mode="json")
    if spec.mlflow_run_id:
        with phase("log evaluation"):
            log_evaluation(client, spec.mlflow_run_id, result)
    return result


if __name__ == "__main__":
    run_job(main)


__all__ = [
    "EVALUATION_ARTIFACT",
    "KNOWN_METRICS",
    "binary_auc",
    "classification_metrics",
    "eval_metrics",
    "load_model",
    "load_validation",
    "main",
    "measure_latency",
]
