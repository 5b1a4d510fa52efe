"""The pipeline YAML contract: one `PipelineSpec` per file in dag_configs/.

Every model rejects unknown keys and describes every field; the same models validate
the YAML, document it (`rayops schema`) and drive the DAG factory. Sections whose stage
is not built yet still validate here, so a typo is caught today, and are refused by
`config.stages` with a "not available yet" message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from airflow_provider_rayops.config.compute import CONN_ID, ComputeProfile, ScalingSpec

_NAME = r"^[a-z][a-z0-9_-]{0,62}$"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d)$")
_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_URI = r"^(file|s3)://.+"
TaskKind = Literal["classification", "regression"]
# The drift tests (drift/methods.py says what each computes); here so the config plane and the CLI
# name them without importing numpy.
DriftMethod = Literal["wasserstein", "jensenshannon", "psi", "ks", "chisquare", "z"]
DriftCorrection = Literal["none", "bonferroni", "benjamini-hochberg"]
TASK_KINDS: tuple[TaskKind, ...] = ("classification", "regression")
# Metrics the evaluate stage computes for each task kind, and which way is better.
CLASSIFICATION_METRICS: dict[str, str] = {
    "accuracy": "max",
    "balanced_accuracy": "max",
    "auc": "max",
    "precision": "max",
    "recall": "max",
    "f1": "max",
    "log_loss": "min",
}
REGRESSION_METRICS: dict[str, str] = {"rmse": "min", "mae": "min", "r2": "max", "mape": "min"}
EVALUATION_METRICS: dict[str, str] = {**CLASSIFICATION_METRICS, **REGRESSION_METRICS}
METRIC_TASK: dict[str, TaskKind] = {
    **dict.fromkeys(CLASSIFICATION_METRICS, "classification"),
    **dict.fromkeys(REGRESSION_METRICS, "regression"),
}
DEFAULT_METRICS: dict[TaskKind, list[str]] = {"classification": ["accuracy", "auc"], "regression": ["rmse", "mae", "r2"]}
# What the built-in loop reports per epoch beside train_loss and val_loss, by task kind (tune.metric).
LOOP_METRIC_TASK: dict[str, TaskKind] = {
    "val_accuracy": "classification",
    "val_auc": "classification",
    "val_rmse": "regression",
    "val_mae": "regression",
    "val_r2": "regression",
}
MetricName = Literal["accuracy", "balanced_accuracy", "auc", "precision", "recall", "f1", "log_loss", "rmse", "mae", "r2", "mape"]

TRUSTED_CACHE = "rayops_trusted_cache"
"""Validation context key: the data was validated before (parse cache); skip costly checks."""
_CRON_PRESETS = {"@once", "@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@continuous"}


def task_claims(pipeline: Mapping[str, Any]) -> list[tuple[tuple[str | int, ...], str, TaskKind]]:
    """What each key of a pipeline mapping says about the task kind: (key path, what it names, kind).

    `train.task` says it outright; an evaluate metric, a gate's metric or `tune.metric` says it
    by naming a metric of one kind (rmse is regression's, auc classification's); a per_class
    gate needs classes. Reads plain mappings, so the loader can check a file that failed the
    schema (a value of the wrong type claims nothing: the schema reports it).
    """

    def named(value: Any, table: Mapping[str, TaskKind]) -> TaskKind | None:
        return table.get(value) if isinstance(value, str) else None

    claims: list[tuple[tuple[str | int, ...], str, TaskKind]] = []
    train, evaluate, tune = (pipeline.get(k) for k in ("train", "evaluate", "tune"))
    if isinstance(train, Mapping) and train.get("task") in TASK_KINDS:
        claims.append((("train", "task"), f"train.task: {train['task']}", train["task"]))
    if isinstance(evaluate, Mapping):
        metrics, gates = evaluate.get("metrics"), evaluate.get("gates")
        for i, metric in enumerate(metrics if isinstance(metrics, list) else ()):
            if kind := named(metric, METRIC_TASK):
                claims.append((("evaluate", "metrics", i), f"metric {metric!r}", kind))
        for i, gate in enumerate(gates if isinstance(gates, list) else ()):
            if not isinstance(gate, Mapping):
                continue
            if kind := named(gate.get("metric"), METRIC_TASK):
                claims.append((("evaluate", "gates", i, "metric"), f"gate metric {gate['metric']!r}", kind))
            elif gate.get("per_class") is not None:
                claims.append((("evaluate", "gates", i, "per_class"), "a per_class gate", "classification"))
    if isinstance(tune, Mapping) and (kind := named(tune.get("metric"), LOOP_METRIC_TASK)):
        claims.append((("tune", "metric"), f"tune.metric {tune['metric']!r}", kind))
    return claims


def parse_duration(text: str) -> float:
    """'250ms', '60s', '5m', '1h', '7d' -> seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"expected a duration such as 250ms, 60s, 5m, 1h or 7d, found {text!r}")
    return float(match.group(1)) * _DURATION_SECONDS[match.group(2)]


def _duration(value: str) -> str:
    if parse_duration(value) <= 0:
        raise ValueError(f"expected a duration above zero, found {value!r}")
    return value


class Spec(BaseModel):
    """Base of every config model: unknown keys are errors, values are frozen once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SplitSpec(Spec):
    """How the ingest stage splits rows into train and validation."""

    validation: float = Field(default=0.2, gt=0.0, lt=1.0, description="Share of rows held out for validation.")
    seed: int = Field(default=7, description="Seed of the split, so the same data always splits the same way.")


class DataSpec(Spec):
    """The training data source and how it becomes a snapshot."""

    source: str = Field(
        pattern=_URI,
        description="URI of the data: file://path (relative paths resolve against the project folder) or "
        "s3://bucket/key; a parquet or CSV file, or a folder/prefix of parquet files.",
    )
    format: Literal["parquet", "csv"] | None = Field(default=None, description="File format; default: from the extension.")
    target: str = Field(min_length=1, description="Name of the label column.")
    features: list[str] | None = Field(default=None, description="Feature columns; default: every column but the target.")
    split: SplitSpec = Field(default_factory=SplitSpec, description="Train/validation split.")
    min_rows: int = Field(default=100, ge=1, description="Fewest rows the source must have, or ingest fails.")


class StorageSpec(Spec):
    """Where snapshots, checkpoints and reports are written."""

    root: str = Field(
        pattern=_URI,
        description="Root URI for everything the pipeline writes: file://path or s3://bucket/prefix (MinIO in production).",
    )
    conn_id: str | None = Field(
        default=None,
        pattern=CONN_ID,
        description="Airflow connection of type rayops_s3 with the endpoint and credentials for s3:// URIs "
        "(credentials never go in YAML).",
    )


class ScalingOverrides(Spec):
    """Per-pipeline changes to the compute profile's training scaling; unset keys keep the profile's."""

    num_workers: int | None = Field(default=None, ge=1, description="Data-parallel Ray Train workers.")
    use_gpu: bool | None = Field(default=None, description="Give each worker a GPU.")
    resources_per_worker: dict[str, float] | None = Field(default=None, description="Ray resources per worker, e.g. {CPU: 2}.")


class CheckpointSpec(Spec):
    """How often training saves checkpoints to storage and how many it keeps."""

    every_epochs: int = Field(default=1, ge=1, description="Save a checkpoint every N epochs.")
    keep: int = Field(default=2, ge=1, description="Checkpoints kept; older ones are deleted.")


def _requirement(line: str) -> str:
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        requirement = Requirement(line)
    except InvalidRequirement as exc:
        reason = str(exc).splitlines()[0]
        raise ValueError(f"{line!r} is not a requirement (a name, extras and versions, e.g. 'lightgbm>=4'): {reason}") from None
    if requirement.url:
        raise ValueError(
            f"{line!r} names a URL; the cluster installs requirements from its package index by name and version "
            "(e.g. 'lightgbm>=4'), never code from an address given in YAML"
        )
    return line


class RuntimeEnvSpec(Spec):
    """What every Ray job of the pipeline gets besides rayops' own settings (Ray's runtime_env)."""

    pip: list[Annotated[str, AfterValidator(_requirement)]] = Field(
        default_factory=list,
        description="Python requirements the cluster installs for this pipeline's jobs (e.g. 'scikit-learn==1.5.2'); "
        "the cluster needs a package index.",
    )
    env_vars: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Environment variables of every job, by name from security.job_env_vars in defaults.yaml "
        "(thread counts and the like by default). Never secrets: those come from connections.",
    )
    excludes: list[str] = Field(
        default_factory=list,
        description="Files of the pipeline's own training code not to ship (gitignore patterns relative to its "
        "package folder, e.g. 'notebooks/', '*.ckpt'); caches, VCS folders, data and key files are never shipped.",
    )

    @field_validator("env_vars")
    @classmethod
    def _names(cls, env_vars: dict[str, Any]) -> dict[str, Any]:
        for name in env_vars:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return env_vars


class TrainSpec(Spec):
    """Distributed training on Ray Train."""

    entrypoint: str = Field(
        pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$",
        description="Per-worker training loop as module:function, or rayops.builtin:tabular_mlp for the built-in model.",
    )
    params: dict[str, Any] = Field(
        default_factory=dict, description="Hyperparameters passed to the loop (epochs, lr, batch_size...)."
    )
    scaling: ScalingOverrides = Field(
        default_factory=ScalingOverrides, description="Overrides of the compute profile's workers and resources."
    )
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec, description="Checkpoint policy.")
    max_failures: int = Field(
        default=2, ge=0, description="Worker failures Ray Train recovers from by resuming from a checkpoint."
    )
    mixed_precision: Literal["auto", "bf16", "fp16", "off"] = Field(
        default="auto", description="Mixed precision on GPU; auto picks bf16 where the GPU supports it. Ignored on CPU."
    )
    task: TaskKind | None = Field(
        default=None,
        description="classification or regression; null: implied by the evaluate metrics and gates, else inferred "
        "from the target at ingest (bool, string or few whole numbers: classification; fractional numbers: regression).",
    )


class Distribution(Spec):
    """One dimension of a Tune search space: exactly one of the keys below."""

    uniform: tuple[float, float] | None = Field(default=None, description="Uniform float in [low, high].")
    loguniform: tuple[float, float] | None = Field(default=None, description="Log-uniform float in [low, high], low > 0.")
    randint: tuple[int, int] | None = Field(default=None, description="Integer in [low, high).")
    choice: list[Any] | None = Field(default=None, min_length=1, description="One of these values, sampled.")
    grid: list[Any] | None = Field(default=None, min_length=1, description="Every one of these values (grid search).")

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        given = [k for k in ("uniform", "loguniform", "randint", "choice", "grid") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"expected exactly one of uniform, loguniform, randint, choice, grid; found {', '.join(given) or 'none'}"
            )
        low_high = self.uniform or self.loguniform or self.randint
        if low_high is not None and not low_high[0] < low_high[1]:
            raise ValueError(f"expected low < high, found [{low_high[0]}, {low_high[1]}]")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform bounds must be > 0")
        return self


class TuneSpec(Spec):
    """Hyperparameter search on Ray Tune around the train stage's loop."""

    search_space: dict[str, Distribution] = Field(min_length=1, description="Train params to search, by name.")
    num_samples: int = Field(default=8, ge=1, description="Trials to run (grid dimensions multiply this).")
    max_concurrent: int = Field(default=2, ge=1, description="Trials running at once.")
    metric: str = Field(description="Metric the search optimises, as reported by the training loop (e.g. val_auc).")
    mode: Literal["min", "max"] = Field(description="Whether a lower or higher metric is better.")
    scheduler: Literal["asha", "fifo"] = Field(
        default="asha", description="asha stops weak trials early; fifo runs all to the end."
    )
    grace_period: int = Field(default=1, ge=1, description="Epochs every trial runs before ASHA may stop it.")


class Gate(Spec):
    """One promotion gate. Write exactly one kind:
    {metric, min/max}, {metric, min_gain_over_champion}, {per_class, min}, {latency_p95_ms}, {max_model_size_mb}."""

    metric: str | None = Field(default=None, description="Metric name from the evaluation (e.g. val_auc).")
    min: float | None = Field(default=None, description="Lower bound of the metric (or of each class with per_class).")
    max: float | None = Field(default=None, description="Upper bound of the metric.")
    min_gain_over_champion: float | None = Field(
        default=None, description="Least improvement of the metric over the serving champion on the same data."
    )
    per_class: Literal["recall", "precision", "f1"] | None = Field(
        default=None, description="Per-class metric every class must meet with min (a fairness/bias floor)."
    )
    latency_p95_ms: float | None = Field(default=None, gt=0, description="Ceiling on the p95 inference latency per batch, in ms.")
    max_model_size_mb: float | None = Field(default=None, gt=0, description="Ceiling on the serialized model size, in MB.")

    @model_validator(mode="after")
    def _one_kind(self) -> Gate:
        if self.latency_p95_ms is not None or self.max_model_size_mb is not None:
            extra = [k for k in ("metric", "min", "max", "min_gain_over_champion", "per_class") if getattr(self, k) is not None]
            both = self.latency_p95_ms is not None and self.max_model_size_mb is not None
            if extra or both:
                raise ValueError("a latency or model size gate stands alone; write other bounds as separate gates")
        elif self.per_class is not None:
            if self.min is None or self.metric or self.max is not None or self.min_gain_over_champion is not None:
                raise ValueError("a per_class gate takes exactly {per_class: <metric>, min: <bound>}")
        elif self.metric is not None:
            bounds = [k for k in ("min", "max", "min_gain_over_champion") if getattr(self, k) is not None]
            if not bounds:
                raise ValueError("a metric gate needs min, max or min_gain_over_champion")
            if "min_gain_over_champion" in bounds and len(bounds) > 1:
                raise ValueError("min_gain_over_champion stands alone; write min/max as a separate gate")
        else:
            raise ValueError("expected one of: metric, per_class, latency_p95_ms, max_model_size_mb")
        return self


class EvaluateSpec(Spec):
    """Evaluation of the trained model on the validation snapshot, and the gates it must pass."""

    metrics: list[MetricName] | None = Field(
        default=None,
        min_length=1,
        description="Metrics computed on the validation split (and for the champion); null: accuracy and auc for "
        "classification, rmse, mae and r2 for regression.",
    )
    gates: list[Gate] = Field(default_factory=list, description="Promotion gates; all must pass.")


class PromoteSpec(Spec):
    """Registration in the MLflow model registry, with aliases instead of stages."""

    registered_model: str = Field(min_length=1, description="Registered model name in MLflow (created if missing).")
    alias: str = Field(default="champion", description="Alias of the version that serves.")
    challenger_alias: str = Field(default="challenger", description="Alias given to a version that passed every gate.")
    previous_alias: str = Field(default="previous", description="Alias kept on the last champion, for rollback.")
    require_approval: bool = Field(default=False, description="Wait for a person to approve in the Airflow UI.")
    on_gate_failure: Literal["skip", "fail"] = Field(
        default="skip",
        description="skip: the run ends with deploy skipped; fail: the run fails (for teams that alert on failures).",
    )

    @model_validator(mode="after")
    def _aliases_differ(self) -> PromoteSpec:
        # One version holds each alias: the champion, the one it replaced and the next candidate
        # must be three names, or promoting would overwrite the rollback target.
        given = {"alias": self.alias, "challenger_alias": self.challenger_alias, "previous_alias": self.previous_alias}
        seen: dict[str, str] = {}
        for key, value in given.items():
            if value in seen:
                raise ValueError(f"{seen[value]} and {key} must differ, both are {value!r}")
            seen[value] = key
        for key, value in given.items():
            # MLflow reserves `latest` and version-like names (v1, v2, ...) for itself.
            if value.lower() == "latest" or (value[:1] in "vV" and value[1:].isdigit()):
                raise ValueError(f"{key}={value!r} is reserved by MLflow (latest, v<number>); choose another alias")
        return self


class ReplicaBounds(Spec):
    """Ray Serve autoscaling bounds."""

    min: int = Field(default=1, ge=1, description="Fewest replicas of each served version.")
    max: int = Field(default=1, ge=1, description="Most replicas; Serve adds them past 8 ongoing requests per replica.")
    num_cpus: float = Field(default=1.0, gt=0, description="CPUs each replica reserves.")
    upscale_delay_s: float = Field(
        default=30.0, ge=0, description="How long load must stay over 8 ongoing requests per replica before one is added."
    )
    look_back_period_s: float = Field(
        default=30.0, gt=0, description="The window Serve averages each replica's load over before it scales."
    )

    @model_validator(mode="after")
    def _ordered(self) -> ReplicaBounds:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) is below min ({self.min})")
        return self


class CanarySpec(Spec):
    """Stepwise traffic shift to a new model version, with automatic rollback."""

    steps: list[int] = Field(
        default_factory=lambda: [10, 50, 100], min_length=1, description="Traffic percentages, increasing, ending at 100."
    )
    hold: str = Field(default="60s", description="How long each step holds before the next (250ms, 60s, 5m, 1h).")
    max_error_rate: float = Field(
        default=0.01, ge=0.0, le=1.0, description="Error share of the new version that triggers rollback."
    )
    max_p99_ms: float | None = Field(default=None, gt=0, description="p99 latency of the new version that triggers rollback.")
    min_requests: int = Field(
        default=0, ge=0, description="Fewest requests the new version must answer in each step to be judged; fewer rolls back."
    )
    on_breach: Literal["fail", "skip"] = Field(
        default="fail",
        description="After a rollback: fail (the run fails; teams alert on it) or skip (the champion step is skipped).",
    )

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[int]) -> list[int]:
        if any(not 0 < s <= 100 for s in steps) or steps != sorted(set(steps)) or steps[-1] != 100:
            raise ValueError(f"expected increasing percentages in (0, 100] ending at 100, found {steps}")
        return steps

    @field_validator("hold")
    @classmethod
    def _hold(cls, hold: str) -> str:
        parse_duration(hold)
        return hold


class DeploySpec(Spec):
    """Ray Serve deployment of the promoted model."""

    app: str = Field(
        pattern=_NAME, description="Ray Serve application name of the endpoint; each version runs as <app>--v<version>."
    )
    route_prefix: str = Field(
        pattern=r"^(/[A-Za-z0-9_.-]+)+$",
        description="HTTP route of the endpoint, e.g. /churn: not / (Serve's proxy answers /-/healthz there itself), "
        "no trailing slash (Serve refuses one).",
    )
    replicas: ReplicaBounds = Field(default_factory=ReplicaBounds, description="Autoscaling bounds of each version.")
    max_batch_size: int = Field(default=32, ge=1, description="Requests batched into one model call.")
    batch_wait_ms: float = Field(default=5.0, ge=0, description="How long a batch waits to fill before the model runs.")
    http_port: int = Field(
        default=8000,
        ge=1,
        le=65535,
        description="Port of Serve's HTTP proxy when rayops starts Serve (a running Serve keeps its own).",
    )
    sticky_header: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9-]+$",
        description="Request header whose value keeps a caller on one version during a canary (e.g. X-User-Id).",
    )
    canary: CanarySpec | None = Field(
        default=None, description="Canary rollout; without it a new version takes all traffic at once."
    )
    log_sample: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Share of served rows written with their predictions under <storage.root>/inference/<pipeline>/ "
        "(the live data drift is judged on); 0: no inference log.",
    )


def check_schedule(schedule: str | None, info: ValidationInfo) -> str | None:
    """A cron expression or preset (None: no schedule)."""
    if schedule is None or schedule in _CRON_PRESETS:
        return schedule
    if info.context and info.context.get(TRUSTED_CACHE):
        return schedule  # checked when first loaded; croniter is half of re-validation time
    from croniter import croniter  # an Airflow dependency; imported lazily to keep the config plane light

    if not croniter.is_valid(schedule):
        raise ValueError(
            f"expected a cron expression (5 fields) or one of {', '.join(sorted(_CRON_PRESETS))}, found {schedule!r}"
        )
    return schedule


class DriftColumnRule(Spec):
    """A column's own drift test or threshold."""

    method: DriftMethod | None = Field(default=None, description="The test for this column; default: the preset's choice.")
    threshold: float | None = Field(default=None, gt=0, description="Its threshold; default: the test's.")


class PerformanceSpec(Spec):
    """Retraining when the model's live quality drops, once labels arrive for served rows."""

    labels: str = Field(
        pattern=_URI,
        description="Where labels land: parquet or CSV files (a file or folder/prefix) with the join key and the label.",
    )
    join_key: str = Field(description="Column that identifies a served row in both the requests and the labels.")
    label: str | None = Field(default=None, description="The label column in the labels; default: data.target.")
    metric: MetricName = Field(description="The metric judged on served rows with labels (accuracy, f1, rmse...).")
    min: float | None = Field(
        default=None, description="Retrain when the metric falls below this (metrics where higher is better)."
    )
    max: float | None = Field(default=None, description="Retrain when the metric rises above this (error metrics: rmse, mae...).")
    min_rows: int = Field(default=100, ge=1, description="Fewest labelled served rows before the metric is judged.")

    @model_validator(mode="after")
    def _one_bound(self) -> PerformanceSpec:
        if (self.min is None) == (self.max is None):
            raise ValueError("set exactly one of min (the metric must stay at or above it) or max (at or below it)")
        return self


class MonitorSpec(Spec):
    """Drift monitoring: a `<pipeline>__monitor` DAG compares live data with the training data on
    its schedule and starts retraining on drift (an Airflow asset event the lifecycle DAG is
    scheduled on)."""

    schedule: str | None = Field(
        default="@hourly", description="How often a drift check starts (cron or preset); null: only when triggered."
    )
    reference: str | None = Field(
        default=None,
        pattern=_URI,
        description="The data drift is judged against; default: the training split of the serving champion's snapshot.",
    )
    current: str | None = Field(
        default=None,
        pattern=_URI,
        description="The live data (a file or folder/prefix of parquet or CSV); default: the endpoint's inference log "
        "(rows the champion served).",
    )
    min_rows: int = Field(default=1000, ge=1, description="New rows since the last check needed before drift is judged.")
    method: DriftMethod | None = Field(
        default=None,
        description="One test for every column; default: Evidently's preset (normed Wasserstein / Jensen-Shannon over "
        "1,000 reference rows, KS / chi-square / Z-test below).",
    )
    threshold: float | None = Field(default=None, gt=0, description="One threshold for every column; default: the test's.")
    columns: dict[str, DriftColumnRule] = Field(default_factory=dict, description="Per-column tests or thresholds.")
    exclude: list[str] = Field(default_factory=list, description="Columns not judged (ids, timestamps).")
    drift_share: float = Field(default=0.5, gt=0, le=1, description="Share of drifted columns that is dataset drift.")
    correction: DriftCorrection = Field(
        default="none",
        description="Correction of p-value tests for many columns (none, as Evidently; bonferroni; benjamini-hochberg).",
    )
    retrain_on_prediction_drift: bool = Field(
        default=False, description="Also retrain when only the model's predictions drifted (always reported)."
    )
    performance: PerformanceSpec | None = Field(default=None, description="Retrain when live quality drops (needs labels).")
    new_rows: int | None = Field(
        default=None, ge=1, description="Retrain once the champion has served this many rows, drift or not."
    )
    cooldown: str = Field(default="6h", description="Least time between two retrainings the monitor starts.")
    poke_interval: str = Field(default="5m", description="How often a waiting check looks for new rows again.")
    wait: str = Field(default="1h", description="How long a check waits for min_rows new rows before it is skipped.")
    memory_mb: int = Field(
        default=1024,
        ge=16,
        description="Data that needs more memory than this is judged in a Ray job, not in the Airflow worker.",
    )

    @field_validator("cooldown", "poke_interval", "wait")
    @classmethod
    def _positive(cls, value: str) -> str:
        return _duration(value)

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, schedule: str | None, info: ValidationInfo) -> str | None:
        return check_schedule(schedule, info)


class AlertSpec(Spec):
    """Who hears when a task of the pipeline fails for good (the champion keeps serving meanwhile)."""

    webhook: str | None = Field(
        default=None,
        pattern=CONN_ID,
        description="An Airflow connection whose host is the URL an alert is POSTed to as JSON ({text, pipeline, dag_id, "
        "run_id, task_id, error, ...}: Slack and Teams incoming webhooks show its text); its password, if set, is sent "
        "as a bearer token.",
    )
    notifier: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$",
        description="Import path of an Airflow notifier class, e.g. airflow.providers.slack.notifications.slack.SlackNotifier "
        "(Airflow's providers' notifiers, or packages in security.notifier_modules).",
    )
    kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="The notifier's arguments (e.g. slack_conn_id, channel, text); plain values, never rendered as templates.",
    )

    @model_validator(mode="after")
    def _one_target(self) -> AlertSpec:
        if (self.webhook is None) == (self.notifier is None):
            raise ValueError("set exactly one of webhook (a connection id) or notifier (an import path)")
        if self.webhook is not None and self.kwargs:
            raise ValueError("kwargs go with notifier; a webhook takes only its connection")
        return self


class TrackingSpec(Spec):
    """Where runs, metrics and models are recorded (MLflow)."""

    conn_id: str | None = Field(
        default=None,
        pattern=CONN_ID,
        description="Airflow connection of type rayops_mlflow (tracking server URL, token or basic auth); "
        "none: the embedded local store under $RAYOPS_HOME/mlflow (local profile only).",
    )
    experiment: str | None = Field(default=None, description="MLflow experiment name; default: the pipeline name.")


class TimeoutsSpec(Spec):
    """How long each stage may run before its task fails (Airflow's execution_timeout). A Ray job
    still running then is stopped; the task is retried like any timeout."""

    ingest: str = Field(default="2h", description="Reading, checking and snapshotting the data.")
    train: str = Field(default="24h", description="One training run on Ray Train.")
    tune: str = Field(default="48h", description="The whole hyperparameter search.")
    evaluate: str = Field(default="2h", description="Scoring the model and the champion.")
    promote: str = Field(default="30m", description="Each registry step (register, champion).")
    deploy: str = Field(default="2h", description="The whole deploy: replicas loading, and every canary step's hold.")
    approval: str = Field(default="7d", description="How long a human approval may wait for an answer.")
    unreachable: str = Field(
        default="60s", description="How long a waiting task tolerates a Ray dashboard that does not answer (head gone)."
    )

    @field_validator("ingest", "train", "tune", "evaluate", "promote", "deploy", "approval", "unreachable")
    @classmethod
    def _positive(cls, value: str) -> str:
        return _duration(value)

    def seconds(self, stage: str) -> float:
        return parse_duration(getattr(self, stage))


class PipelineSpec(Spec):
    """One ML pipeline: one YAML file in dag_configs/, one lifecycle DAG."""

    pipeline: str = Field(pattern=_NAME, description="Pipeline name; DAG ids derive from it.")
    description: str | None = Field(default=None, description="What the pipeline is for, shown in the Airflow UI.")
    owner: str = Field(default="rayops", description="Airflow owner of the DAG's tasks.")
    tags: list[str] = Field(default_factory=list, description="Extra Airflow tags.")
    schedule: str | None = Field(
        default=None, description="Retraining schedule: cron or preset (@daily, @weekly...); null: manual only."
    )
    paused_upon_creation: bool | None = Field(
        default=None,
        description="Whether the pipeline's DAGs arrive paused in Airflow (false: schedules and drift start runs at once); "
        "default: Airflow's [core] dags_are_paused_at_creation (true).",
    )
    start_date: str = Field(
        default="2025-01-01", pattern=r"^\d{4}-\d{2}-\d{2}$", description="First date the schedule counts from (UTC)."
    )
    retries: int = Field(
        default=1, ge=0, description="Airflow retries of each task (a retried Ray job re-attaches, never duplicates)."
    )
    retry_delay: str = Field(default="30s", description="Wait between retries (250ms, 60s, 5m, 1h).")
    timeouts: TimeoutsSpec = Field(default_factory=TimeoutsSpec, description="Time limits per stage.")
    compute: str = Field(default="local", description="Name of a compute profile from defaults.yaml.")
    compute_profiles: dict[str, ComputeProfile] = Field(
        default_factory=dict, description="Compute profiles by name; normally given once in defaults.yaml."
    )
    storage: StorageSpec = Field(
        default_factory=lambda: StorageSpec(root="file://.rayops/artifacts"), description="Where the pipeline writes."
    )
    tracking: TrackingSpec = Field(default_factory=TrackingSpec, description="MLflow tracking and registry.")
    runtime_env: RuntimeEnvSpec = Field(
        default_factory=RuntimeEnvSpec, description="Requirements, environment and code excludes of every Ray job."
    )
    data: DataSpec = Field(description="Training data source: the ingest stage.")
    train: TrainSpec | None = Field(default=None, description="Distributed training stage.")
    tune: TuneSpec | None = Field(default=None, description="Hyperparameter search stage (wraps train).")
    evaluate: EvaluateSpec | None = Field(default=None, description="Evaluation and promotion gates.")
    promote: PromoteSpec | None = Field(default=None, description="MLflow registry promotion.")
    deploy: DeploySpec | None = Field(default=None, description="Ray Serve deployment with canary.")
    monitor: MonitorSpec | None = Field(default=None, description="Drift monitoring that triggers retraining.")
    alerts: list[AlertSpec] = Field(
        default_factory=list, description="Called when a task of the pipeline's DAGs fails for good (after its retries)."
    )

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, schedule: str | None, info: ValidationInfo) -> str | None:
        return check_schedule(schedule, info)

    @field_validator("retry_delay")
    @classmethod
    def _retry_delay(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def task(self) -> TaskKind | None:
        """The task kind the YAML declares or implies (see `task_claims`); None: ingest infers it from the target."""
        claims = task_claims(self.model_dump(mode="json", include={"train", "evaluate", "tune"}))
        return claims[0][2] if claims else None

    @property
    def evaluation_metrics(self) -> list[str] | None:
        """evaluate.metrics, or the default of the task kind when it is known; None: the evaluate job picks by the model."""
        if self.evaluate is None:
            return None
        if self.evaluate.metrics is not None:
            return list(self.evaluate.metrics)
        return list(DEFAULT_METRICS[self.task]) if self.task else None

    @property
    def profile(self) -> ComputeProfile:
        return self.compute_profiles[self.compute]

    @property
    def train_scaling(self) -> ScalingSpec:
        """The profile's scaling with this pipeline's train.scaling overrides applied."""
        base = self.profile.scaling.model_dump()
        if self.train is not None:
            base.update(self.train.scaling.model_dump(exclude_none=True))
        return ScalingSpec.model_validate(base)
