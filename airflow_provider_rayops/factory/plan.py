"""A pipeline's task graph and the exact Ray job each task submits, without Airflow.

The DAG builder turns a `PipelinePlan` into Airflow objects; `rayops render` prints it.
Keeping the plan free of Airflow makes it cheap to compute and easy to test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from airflow_provider_rayops.config.loader import LoadedPipeline
from airflow_provider_rayops.config.schema import PipelineSpec, parse_duration

JOBS_MODULE = "airflow_provider_rayops.jobs"


@dataclass(frozen=True)
class RunParam:
    """A value a person may override when triggering the DAG from the Airflow UI."""

    name: str
    default: Any
    schema: dict[str, Any]
    description: str


@dataclass(frozen=True)
class JobSubmission:
    """What SubmitRayJobOperator sends to the Ray Jobs API for one task."""

    entrypoint: str
    job_args: dict[str, Any]
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_memory: int | None = None
    entrypoint_resources: dict[str, float] | None = None


@dataclass(frozen=True)
class PlannedTask:
    """One task of the lifecycle DAG, inside the task group of its stage."""

    stage: str
    task_id: str
    doc: str
    submission: JobSubmission
    upstream: tuple[str, ...] = ()

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


def _param_ref(name: str) -> str:
    # Rendered by Airflow with render_template_as_native_obj, so numbers stay numbers.
    return "{{ params.%s }}" % name


def plan_pipeline(loaded: LoadedPipeline) -> PipelinePlan:
    spec = loaded.spec
    data = spec.data
    params = [
        RunParam(
            "source",
            data.source,
            {"type": "string", "pattern": r"^(file|s3)://.+"},
            "Data source URI to snapshot for this run (file:// or s3://).",
        ),
        RunParam(
            "validation_fraction",
            data.split.validation,
            {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            "Share of rows held out for validation.",
        ),
        RunParam("split_seed", data.split.seed, {"type": "integer"}, "Seed of the train/validation split."),
    ]
    ingest = PlannedTask(
        stage="ingest",
        task_id="snapshot",
        doc="Read the source, check its schema, split it and write an immutable content-hashed snapshot.",
        submission=JobSubmission(
            entrypoint=f"python -m {JOBS_MODULE}.ingest",
            job_args={
                "source": _param_ref("source"),
                "format": data.format,
                "target": data.target,
                "features": list(data.features) if data.features is not None else None,
                "split_validation": _param_ref("validation_fraction"),
                "seed": _param_ref("split_seed"),
                "min_rows": data.min_rows,
                "snapshot_root": f"{spec.storage.root.rstrip('/')}/snapshots/{spec.pipeline}",
            },
            entrypoint_num_cpus=1,
        ),
    )
    return PipelinePlan(
        dag_id=spec.pipeline,
        spec=spec,
        config_hash=loaded.config_hash,
        params=params,
        tasks=[ingest],
        retry_delay_s=parse_duration(spec.retry_delay),
    )


def render_job_args(job_args: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The job args as a run with these params would send them (what `rayops render` shows)."""
    rendered: dict[str, Any] = {}
    for key, value in job_args.items():
        if isinstance(value, str) and value.startswith("{{ params.") and value.endswith(" }}"):
            rendered[key] = params[value[len("{{ params.") : -3]]
        else:
            rendered[key] = value
    return rendered
