"""A pipeline's task graph and the exact Ray job each task submits, without Airflow.

The DAG builder turns a `PipelinePlan` into Airflow objects; `rayops render` prints it.
Keeping the plan free of Airflow makes it cheap to compute and easy to test.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_provider_rayops.backends.cluster_code import JobCode
from airflow_provider_rayops.config.loader import LoadedPipeline
from airflow_provider_rayops.config.policy import project_code_path
from airflow_provider_rayops.config.schema import PipelineSpec, parse_duration
from airflow_provider_rayops.jobs import contracts
from airflow_provider_rayops.jobs.contracts import JobContract
from airflow_provider_rayops.operators.run_values import (
    RunFact,
    RunFolder,
    RunTrigger,
    TriggerParam,
    UpstreamResult,
    preview_run_values,
)
from airflow_provider_rayops.serving.inference_log import log_uri


@dataclass(frozen=True)
class RunParam:
    """A value a person may override when triggering the DAG from the Airflow UI."""

    name: str
    default: Any
    schema: dict[str, Any]
    description: str


@dataclass(frozen=True)
class JobSubmission:
    """What SubmitRayJobOperator sends to the Ray Jobs API for one task: which job (its contract:
    module, argument and result models) and its arguments. `job_args` is plain data from the
    config plus run-time values (operators/run_values.py); it is never a template. The plan checks
    the arguments against the contract when it is made (run-time values as their previews), so a
    factory mistake is a DAG import error, not a failed run."""

    contract: JobContract
    job_args: dict[str, Any]
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_memory: int | None = None
    entrypoint_resources: dict[str, float] | None = None
    with_mlflow: bool = False  # the job gets the MLflow tracking settings in its environment

    def __post_init__(self) -> None:
        self.contract.args.model_validate(preview_run_values(self.job_args))

    @property
    def entrypoint(self) -> str:
        return self.contract.entrypoint


# Non-job tasks: PlannedTask.operator -> the class that runs it (operators/mlflow_model.py, and
# operators/serve.py for deploy).
REGISTRY_OPERATORS: dict[str, str] = {
    "register": "RegisterMLflowModelOperator",
    "approve": "ApproveModelVersionOperator",
    "promote": "PromoteMLflowModelOperator",
    "deploy": "DeployRayServeOperator",
}


@dataclass(frozen=True)
class PlannedTask:
    """One task of the lifecycle DAG, inside the task group of its stage: a Ray job
    (`submission`) or, for registry steps that only call MLflow, an `operator` with `arguments`."""

    stage: str
    task_id: str
    doc: str
    submission: JobSubmission | None = None
    upstream: tuple[str, ...] = ()
    operator: str = "ray_job"  # ray_job | register | approve | promote | deploy
    arguments: dict[str, Any] = field(default_factory=dict)
    timeout_s: float | None = None  # the stage's time limit (timeouts.<stage>)

    @property
    def full_id(self) -> str:
        return f"{self.stage}.{self.task_id}"


@dataclass(frozen=True)
class PipelinePlan:
    """Everything the factory needs to build one lifecycle DAG."""

    dag_id: str
    spec: PipelineSpec
    config_hash: str
    params: list[RunParam]
    tasks: list[PlannedTask]
    retry_delay_s: float = field(default=30.0)
    unreachable_timeout_s: float = field(default=60.0)
    # What every job imports besides Ray: rayops' job code and the pipeline's own module.
    code: JobCode = field(default_factory=JobCode)


_JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string"}


def pipeline_runtime_env(spec: PipelineSpec) -> dict[str, object]:
    """The pipeline's runtime_env (pip, env_vars) as Ray takes it."""
    runtime_env = spec.runtime_env
    env: dict[str, object] = {}
    if runtime_env.pip:
        env["pip"] = list(runtime_env.pip)
    if runtime_env.env_vars:
        env["env_vars"] = {name: _env_value(value) for name, value in runtime_env.env_vars.items()}
    return env


def _env_value(value: object) -> str:
    """A YAML scalar as an environment variable's text (true -> "true", as a shell user writes it)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def plan_pipeline(loaded: LoadedPipeline) -> PipelinePlan:
    spec = loaded.spec
    params: list[RunParam] = []
    tasks = [_plan_ingest(loaded, params)]
    lineage = _lineage(loaded)
    if spec.tune is not None:
        tasks.append(_plan_tune(spec, lineage, upstream=tasks[-1]))
    elif spec.train is not None:
        tasks.append(_plan_train(spec, params, lineage, upstream=tasks[-1]))
    if spec.evaluate is not None:
        tasks.append(_plan_evaluate(spec, snapshot_task=tasks[0], model_task=tasks[-1]))
    if spec.promote is not None:
        tasks += _plan_promote(spec, evaluate_task=tasks[-1])
    tasks = [_with_timeout(task, spec) for task in tasks]
    return PipelinePlan(
        dag_id=spec.pipeline,
        spec=spec,
        config_hash=loaded.config_hash,
        params=params,
        tasks=tasks,
        retry_delay_s=parse_duration(spec.retry_delay),
        unreachable_timeout_s=spec.timeouts.seconds("unreachable"),
        code=job_code(loaded),
    )


def job_code(loaded: LoadedPipeline) -> JobCode:
    """What the pipeline's jobs import: rayops' job code, and train.entrypoint's package when it
    lives in the project folder (shipped or checked as the compute profile's `code:` says)."""
    spec = loaded.spec
    train = spec.train
    path = project_code_path(train.entrypoint, project_dir=Path(loaded.project_dir)) if train and loaded.project_dir else None
    return JobCode(
        rayops=True,
        modules=(str(path),) if path is not None else (),
        excludes=tuple(spec.runtime_env.excludes),
        pip=tuple(spec.runtime_env.pip),
        profile_name=spec.compute,
        project_dir=loaded.project_dir or None,
    )


def _with_timeout(task: PlannedTask, spec: PipelineSpec) -> PlannedTask:
    stage = "approval" if task.operator == "approve" else task.stage
    return dataclasses.replace(task, timeout_s=spec.timeouts.seconds(stage))


def _plan_ingest(loaded: LoadedPipeline, params: list[RunParam]) -> PlannedTask:
    spec = loaded.spec
    data = spec.data
    params += [
        RunParam(
            "source",
            data.source,
            {"type": "string", "pattern": r"^(file|s3)://.+"},
            "Data source URI to snapshot for this run (file:// or s3://, under the pipeline's allowed roots).",
        ),
        RunParam(
            "validation_fraction",
            data.split.validation,
            {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "Share of rows held out for validation.",
        ),
        RunParam("split_seed", data.split.seed, {"type": "integer"}, "Seed of the train/validation split."),
    ]
    return PlannedTask(
        stage="ingest",
        task_id="snapshot",
        doc="Read the source, check its schema, split it and write an immutable content-hashed snapshot.",
        submission=JobSubmission(
            contract=contracts.INGEST,
            job_args={
                # A source given at trigger time is checked against the allowed roots before submitting.
                "source": TriggerParam("source", data.source, within=loaded.source_roots, base_dir=loaded.project_dir),
                "format": data.format,
                "target": data.target,
                "features": list(data.features) if data.features is not None else None,
                "split_validation": TriggerParam("validation_fraction", data.split.validation),
                "seed": TriggerParam("split_seed", data.split.seed),
                "min_rows": data.min_rows,
                "task": spec.task,
                "snapshot_root": f"{_root(spec)}/snapshots/{spec.pipeline}",
            },
            entrypoint_num_cpus=1,
        ),
    )


def _train_args(spec: PipelineSpec, snapshot_task: PlannedTask, lineage: dict[str, Any]) -> dict[str, Any]:
    train = spec.train
    assert train is not None
    return {
        "snapshot_uri": UpstreamResult(snapshot_task.full_id, "snapshot_uri"),
        "entrypoint": train.entrypoint,
        "scaling": spec.train_scaling.model_dump(mode="json"),
        "checkpoint": train.checkpoint.model_dump(mode="json"),
        "max_failures": train.max_failures,
        "mixed_precision": train.mixed_precision,
        "run_root": RunFolder(f"{_root(spec)}/runs/{spec.pipeline}"),
        "experiment": spec.tracking.experiment or spec.pipeline,
        "lineage": lineage,
    }


def _plan_train(spec: PipelineSpec, params: list[RunParam], lineage: dict[str, Any], upstream: PlannedTask) -> PlannedTask:
    train = spec.train
    assert train is not None
    taken = {p.name for p in params}
    loop_params: dict[str, Any] = {}
    for name, value in train.params.items():
        kind = _JSON_TYPES.get(type(value))
        if kind is None:  # lists and dicts stay as written; the UI form takes scalars
            loop_params[name] = value
            continue
        param_name = name if name not in taken else f"train_{name}"
        params.append(RunParam(param_name, value, {"type": kind}, f"Training parameter {name} (train.params.{name})."))
        loop_params[name] = TriggerParam(param_name, value)
    args = _train_args(spec, upstream, lineage)
    args["params"] = loop_params
    return PlannedTask(
        stage="train",
        task_id="fit",
        doc="Train on Ray Train from the snapshot; checkpoints to storage, resumes after a failure; one MLflow run.",
        upstream=(upstream.full_id,),
        submission=JobSubmission(
            contract=contracts.TRAIN,
            job_args=args,
            # The driver only coordinates: its CPU goes to the training workers.
            entrypoint_num_cpus=0,
            with_mlflow=True,
        ),
    )


def _plan_tune(spec: PipelineSpec, lineage: dict[str, Any], upstream: PlannedTask) -> PlannedTask:
    tune = spec.tune
    train = spec.train
    assert tune is not None and train is not None
    args = _train_args(spec, upstream, lineage)
    args["params"] = dict(train.params)
    args["search"] = tune.model_dump(mode="json", exclude_none=True)
    return PlannedTask(
        stage="tune",
        task_id="search",
        doc="Search hyperparameters with Ray Tune (ASHA early stopping); every trial a nested MLflow run.",
        upstream=(upstream.full_id,),
        submission=JobSubmission(contract=contracts.TUNE, job_args=args, entrypoint_num_cpus=0, with_mlflow=True),
    )


def _plan_evaluate(spec: PipelineSpec, *, snapshot_task: PlannedTask, model_task: PlannedTask) -> PlannedTask:
    evaluate = spec.evaluate
    assert evaluate is not None
    return PlannedTask(
        stage="evaluate",
        task_id="score",
        doc="Score the model (and the serving champion) on the validation snapshot: metrics (per class too), latency, size.",
        upstream=(model_task.full_id,),
        submission=JobSubmission(
            contract=contracts.EVALUATE,
            job_args={
                "model_uri": UpstreamResult(model_task.full_id, "model_uri"),
                "mlflow_run_id": UpstreamResult(model_task.full_id, "mlflow_run_id"),
                "snapshot_uri": UpstreamResult(snapshot_task.full_id, "snapshot_uri"),
                "metrics": spec.evaluation_metrics,
                "registered_model": spec.promote.registered_model if spec.promote else None,
                "champion_alias": spec.promote.alias if spec.promote else "champion",
                # The monitor's prediction drift compares live outputs with these.
                "predictions_folder": RunFolder(f"{_root(spec)}/runs/{spec.pipeline}") if spec.monitor else None,
            },
            entrypoint_num_cpus=1,
            with_mlflow=True,
        ),
    )


def _plan_promote(spec: PipelineSpec, *, evaluate_task: PlannedTask) -> list[PlannedTask]:
    promote, evaluate = spec.promote, spec.evaluate
    assert promote is not None and evaluate is not None
    common = {"registered_model": promote.registered_model, "mlflow_conn_id": spec.tracking.conn_id}
    register = PlannedTask(
        stage="promote",
        task_id="register",
        doc="Register the evaluated model as a new version, judge it by the gates, give it the challenger alias if it passes.",
        upstream=(evaluate_task.full_id,),
        operator="register",
        arguments={
            **common,
            "evaluation": UpstreamResult(evaluate_task.full_id),
            "gates": [g.model_dump(mode="json", exclude_none=True) for g in evaluate.gates],
            "challenger_alias": promote.challenger_alias,
            "on_gate_failure": promote.on_gate_failure,
        },
    )
    tasks = [register]
    approval = None
    if promote.require_approval:
        approve = PlannedTask(
            stage="promote",
            task_id="approve",
            doc="Wait for a person to approve the version in the Airflow UI; the decision is recorded on it.",
            upstream=(register.full_id,),
            operator="approve",
            arguments={
                **common,
                "registration": UpstreamResult(register.full_id),
                "champion_alias": promote.alias,
                "challenger_alias": promote.challenger_alias,
            },
        )
        tasks.append(approve)
        approval = UpstreamResult(approve.full_id)
    deploy = spec.deploy
    if deploy is not None:
        # The version serves first; it becomes the registry's champion once it serves all traffic.
        tasks.append(
            PlannedTask(
                stage="deploy",
                task_id="serve",
                doc="Put the version behind the pipeline's Ray Serve endpoint: at 100% on a first deploy, else "
                "through the canary steps, judged by the router's error rate and p99, rolled back on a breach.",
                upstream=(tasks[-1].full_id,),
                operator="deploy",
                arguments={
                    **common,
                    "version": UpstreamResult(register.full_id),
                    "app": deploy.app,
                    "route_prefix": deploy.route_prefix,
                    "storage_conn_id": spec.storage.conn_id,
                    "replicas": deploy.replicas.model_dump(mode="json"),
                    "batch": {"max_batch_size": deploy.max_batch_size, "wait_ms": deploy.batch_wait_ms},
                    "http_port": deploy.http_port,
                    "sticky_header": deploy.sticky_header,
                    "challenger_alias": promote.challenger_alias,
                    "canary": deploy.canary.model_dump(mode="json") if deploy.canary else None,
                    "inference_log": {"uri": log_uri(_root(spec), spec.pipeline), "sample": deploy.log_sample}
                    if deploy.log_sample > 0
                    else None,
                },
            )
        )
    # The champion alias marks what serves: after the deploy when there is one, else at once.
    tasks.append(
        PlannedTask(
            stage="promote",
            task_id="champion",
            doc="Give the version the champion alias; the old champion keeps the previous alias for rollback.",
            upstream=(tasks[-1].full_id,),
            operator="promote",
            arguments={
                **common,
                "version": UpstreamResult(register.full_id),
                "approval": approval,
                "champion_alias": promote.alias,
                "previous_alias": promote.previous_alias,
                "challenger_alias": promote.challenger_alias,
            },
        )
    )
    return tasks


def _root(spec: PipelineSpec) -> str:
    return spec.storage.root.rstrip("/")


def _lineage(loaded: LoadedPipeline) -> dict[str, Any]:
    """Who and what produced a run: recorded as tags on every MLflow run (README: Promotion and lineage)."""
    return {
        "pipeline": loaded.spec.pipeline,
        "config_file": loaded.file,
        "config_hash": loaded.config_hash,
        "config_git_commit": git_commit_of(Path(loaded.file).parent),
        "dag_id": RunFact("dag_id"),
        "run_id": RunFact("run_id"),
        "task_id": RunFact("task_id"),
        "try_number": RunFact("try_number"),
        "trigger": RunTrigger("kind"),
        "trigger_report": RunTrigger("report"),
    }


@functools.lru_cache(maxsize=64)
def git_commit_of(folder: Path) -> str | None:
    """The commit checked out in the git work tree holding `folder`, read from .git without
    running git (this runs while Airflow parses DAG files). None outside a git checkout."""
    for candidate in (folder.resolve(), *folder.resolve().parents):
        dot_git = candidate / ".git"
        if dot_git.is_file():  # a worktree or submodule: "gitdir: <path>"
            text = dot_git.read_text().strip()
            dot_git = (candidate / text.split(":", 1)[1].strip()).resolve() if text.startswith("gitdir:") else dot_git
        if dot_git.is_dir():
            return _resolve_head(dot_git)
    return None


def _resolve_head(git_dir: Path) -> str | None:
    try:
        head = (git_dir / "HEAD").read_text().strip()
    except OSError:
        return None
    if not head.startswith("ref:"):
        return head or None
    ref = head[4:].strip()
    common = git_dir
    if (git_dir / "commondir").is_file():  # worktrees keep refs in the main .git
        common = (git_dir / (git_dir / "commondir").read_text().strip()).resolve()
    for base in (git_dir, common):
        ref_file = base / ref
        if ref_file.is_file():
            return ref_file.read_text().strip() or None
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split(" ", 1)[0]
    return None  # a branch with no commit yet
