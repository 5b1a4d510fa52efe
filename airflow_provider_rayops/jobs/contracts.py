"""What each rayops Ray job takes and gives back: a pydantic model of its arguments and one of its result.

    factory plan --(args: config data + run values)--> SubmitRayJobOperator
        resolves the run values, validates `contract.args`, submits (RAYOPS_JOB_ARGS)
    job: `contract.args.parse(...)` ... returns `contract.result(...)` as JSON (::rayops-result::)
    operator: validates `contract.result`, returns it as the task's XCom -> the next job's args

A reader sees here, in one place, what every job receives and returns; the factory, the operator
and the jobs all import this module (pydantic only: no Airflow, no Ray, no torch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from airflow_provider_rayops.config.compute import ScalingSpec
from airflow_provider_rayops.config.schema import EVALUATION_METRICS, CheckpointSpec, TaskKind, TuneSpec
from airflow_provider_rayops.jobs.runtime import JobInputError

ColumnKind = Literal["numeric", "bool", "categorical"]


class JobArgs(BaseModel):
    """Arguments of a job. Unknown keys are errors: a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")

    @classmethod
    def parse(cls, args: Mapping[str, Any] | JobArgs) -> Any:
        """The validated arguments; the first problem becomes a JobInputError naming the argument."""
        if isinstance(args, cls):
            return args
        try:
            return cls.model_validate(dict(args))
        except ValidationError as exc:
            raise JobInputError(describe_error(exc, cls, what="job argument")) from None


class JobResult(BaseModel):
    """What a job reports back. Unknown keys are errors: the reader and the writer agree exactly."""

    model_config = ConfigDict(extra="forbid")


def describe_error(exc: ValidationError, model: type[BaseModel], *, what: str) -> str:
    """The first problem of a validation, naming the field: `job argument 'source' is required`."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "value"
    if error["type"] == "missing":
        return f"{what} {where!r} is required"
    if error["type"] == "extra_forbidden":
        return f"{what} {where!r} is not known; expected some of {', '.join(sorted(model.model_fields))}"
    message = error["msg"].removeprefix("Value error, ")
    return f"{what} {where}={error.get('input')!r}: {message}"


# -- ingest -------------------------------------------------------------------------------------


class IngestArgs(JobArgs):
    """Read a source, check it, split it and write a content-addressed snapshot."""

    source: str = Field(min_length=1, description="file:// or s3:// URI of a parquet/CSV file or folder.")
    target: str = Field(min_length=1, description="The label column.")
    snapshot_root: str = Field(min_length=1, description="Folder URI the snapshot goes under (by content hash).")
    features: list[str] | None = Field(default=None, description="Feature columns; None: every column but the target.")
    split_validation: float = Field(default=0.2, gt=0.0, lt=1.0, description="Share of rows held out.")
    seed: int = Field(default=7, description="Seed of the split.")
    min_rows: int = Field(default=100, ge=2, description="Fewest rows the source must have.")
    format: Literal["parquet", "csv"] | None = Field(default=None, description="None: from the extension.")
    column_types: dict[str, ColumnKind] | None = Field(default=None, description="Pins the kind of some columns.")
    task: TaskKind | None = Field(default=None, description="classification or regression; None: inferred from the target.")


class SplitRows(JobResult):
    train: int = Field(ge=0)
    validation: int = Field(ge=0)


class IngestResult(JobResult):
    snapshot_uri: str = Field(description="The snapshot folder (manifest.json, train and validation parquet).")
    content_hash: str = Field(description="sha256 of the snapshot's content; the folder is named by it.")
    rows: SplitRows
    task: TaskKind = Field(description="classification or regression: declared, or inferred from the target.")
    reused: bool = Field(description="The same content was snapshotted before; nothing was written.")


# -- train / tune -------------------------------------------------------------------------------


class TrainArgs(JobArgs):
    """Train the built-in model or a user loop on Ray Train from a snapshot."""

    snapshot_uri: str = Field(min_length=1, description="The ingest job's snapshot.")
    entrypoint: str = Field(
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$", description="module:function, or rayops.builtin:<loop>."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="The loop's hyperparameters.")
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    max_failures: int = Field(default=2, ge=0)
    mixed_precision: Literal["auto", "bf16", "fp16", "off"] = "auto"
    run_root: str = Field(min_length=1, description="Folder URI for this Airflow run's checkpoints (same on every try).")
    experiment: str = Field(min_length=1, description="MLflow experiment.")
    lineage: dict[str, Any] = Field(default_factory=dict, description="Tags for the MLflow run (rayops.<key>).")
    run_key: str | None = Field(default=None, description="Finds the MLflow run again on a retry; default: from run_root.")
    run_name: str | None = None


class TrainResult(JobResult):
    mlflow_run_id: str
    experiment_id: str
    tracking_uri: str
    model_uri: str = Field(description="The logged model (models:/m-...).")
    checkpoint_uri: str
    metrics: dict[str, Any] = Field(description="The last epoch's reported metrics.")
    epochs_completed: int
    resumed_from_epoch: int | None


class TuneArgs(TrainArgs):
    """The train job's arguments plus the search."""

    search: TuneSpec = Field(description="The YAML tune section.")


class TrialSummary(JobResult):
    trial_id: str
    mlflow_run_id: str
    status: str
    epochs: int | None
    metric: float | None = Field(description="The searched metric at the trial's last epoch.")


class TuneResult(TrainResult):
    parent_run_id: str
    best_trial_id: str
    best_config: dict[str, Any]
    trials: list[TrialSummary]


# -- evaluate -----------------------------------------------------------------------------------


class LatencySpec(JobArgs):
    """How the inference latency is measured."""

    batch_size: int = Field(default=256, ge=1, description="Rows per predict_proba (or, regression, predict) call.")
    batches: int = Field(default=50, ge=1, description="Timed calls; p50/p95 are over these.")
    warmup: int = Field(default=5, ge=0, description="Untimed calls first (lazy init, caches).")


class EvaluateArgs(JobArgs):
    """Score a model (and the serving champion) on the validation snapshot."""

    model_uri: str = Field(min_length=1)
    snapshot_uri: str = Field(min_length=1)
    mlflow_run_id: str | None = Field(default=None, description="The training run the evaluation is logged to.")
    metrics: list[str] | None = Field(
        default=None, min_length=1, description="None: the default metrics of the model's task kind."
    )
    registered_model: str | None = Field(default=None, description="Where the champion is looked up.")
    champion_alias: str = Field(default="champion", min_length=1)
    latency: LatencySpec = Field(default_factory=LatencySpec)
    predictions_folder: str | None = Field(
        default=None,
        description="Where the model's outputs on the validation split are written (validation_predictions.parquet): "
        "the reference of the monitor's prediction drift.",
    )

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, metrics: list[str] | None) -> list[str] | None:
        if metrics is None:
            return None
        unknown = [name for name in metrics if name not in EVALUATION_METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(map(repr, unknown))}; known metrics: {', '.join(EVALUATION_METRICS)}")
        return list(dict.fromkeys(metrics))  # a name twice is asked once


class EvaluateResult(JobResult):
    format_version: int
    model_uri: str
    snapshot_uri: str
    snapshot_hash: str
    split: str
    rows: int
    task: TaskKind
    classes: list[str]
    positive_class: str | None
    metric_directions: dict[str, Literal["max", "min"]]
    metrics: dict[str, float | None] = Field(description="Exactly the requested metrics; null when undefined.")
    per_class: dict[str, dict[str, Any]]
    latency: dict[str, Any]
    model_size_bytes: int
    model_size_mb: float
    champion: dict[str, Any] | None
    champion_absent_reason: str | None
    gain_over_champion: dict[str, float | None] | None
    mlflow_run_id: str | None
    tracking_uri: str
    evaluation_uri: str | None
    predictions_uri: str | None = None


class DriftArgs(JobArgs):
    """Judge the drift of live files against a reference and write the report (the monitor's check,
    for data larger than an Airflow worker should hold)."""

    reference: str = Field(min_length=1)
    current: list[str] = Field(min_length=1, description="The live files to judge.")
    prediction_reference: str | None = Field(default=None, description="The model's outputs on reference data.")
    options: dict[str, Any] = Field(default_factory=dict, description="drift.DriftOptions fields, as plain values.")
    report_folder: str = Field(min_length=1, description="Where drift.json and drift.html are written.")
    title: str = "Drift report"
    details: dict[str, Any] = Field(default_factory=dict, description="Facts shown under the report's title.")


class DriftJobResult(JobResult):
    result: dict[str, Any] = Field(description="DriftResult.to_json(): the verdict and every column's test.")
    report_uri: str
    report_html_uri: str


# -- the jobs ------------------------------------------------------------------------------------

JOBS_PACKAGE = "airflow_provider_rayops.jobs"


@dataclass(frozen=True)
class JobContract:
    """One rayops job: the module Ray runs and the models of what it takes and gives back."""

    name: str
    args: type[JobArgs]
    result: type[JobResult]

    @property
    def module(self) -> str:
        return f"{JOBS_PACKAGE}.{self.name}"

    @property
    def entrypoint(self) -> str:
        return f"python -m {self.module}"


INGEST = JobContract("ingest", IngestArgs, IngestResult)
TRAIN = JobContract("train", TrainArgs, TrainResult)
TUNE = JobContract("tune", TuneArgs, TuneResult)
EVALUATE = JobContract("evaluate", EvaluateArgs, EvaluateResult)
DRIFT = JobContract("drift", DriftArgs, DriftJobResult)
CONTRACTS = {contract.name: contract for contract in (INGEST, TRAIN, TUNE, EVALUATE, DRIFT)}
