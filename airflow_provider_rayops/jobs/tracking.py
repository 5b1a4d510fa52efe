"""MLflow helpers shared by the train, tune and evaluate jobs (they run inside Ray; no Airflow here).

- Tracking URI: `MLFLOW_TRACKING_URI` (the operator sets it from an Airflow connection), else
  the embedded default `sqlite:///$RAYOPS_HOME/mlflow/mlflow.db` with artifacts under
  `$RAYOPS_HOME/mlflow/artifacts` (a database store, because the model registry needs one).
- One run per training, found again by a deterministic key: the run carries the tag
  `rayops.run_key` (a hash of what the caller calls the key, e.g. the task's run_root), and
  `start_or_resume_run` reopens that run instead of creating a second one, so an Airflow
  retry keeps logging into the run of its first try.
- Lineage tags are `rayops.<name>` (airflow_provider_rayops/tag_names.py); values are strings.
- Metrics are logged once per (key, step): a retry that replays epochs does not duplicate them.
- Params are logged once; a retry that brings a different value for a param is refused
  (`ParamConflict`), since it would resume another training's checkpoints.

Everything goes through an explicit `MlflowClient` and run ids, never MLflow's active-run
state, so the tune job can keep many runs open at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_rayops import tag_names as names
from airflow_provider_rayops.config.home import rayops_home

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    import pyarrow as pa
    from mlflow import MlflowClient
    from mlflow.entities import Run

    from airflow_provider_rayops.jobs.modeling import LoadedCheckpoint

TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
PARENT_RUN_TAG = "mlflow.parentRunId"
MODEL_NAME = "model"
_BATCH_MAX = 1000


class ParamConflict(ValueError):
    """A param already logged on the run has another value than the one given now."""

    def __init__(self, *, run_id: str, name: str, logged: str, given: str) -> None:
        self.run_id = run_id
        self.name = name
        super().__init__(
            f"param {name!r} is {logged!r} in MLflow run {run_id} of this run key, but {given!r} now; "
            "a retry must train with the same params (use a new run_root for a new training)"
        )


def embedded_tracking_uri() -> str:
    return f"sqlite:///{(rayops_home() / 'mlflow' / 'mlflow.db').absolute()}"


def embedded_artifact_root() -> str:
    return (rayops_home() / "mlflow" / "artifacts").absolute().as_uri()


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, or the embedded default."""
    return os.environ.get(TRACKING_URI_ENV) or embedded_tracking_uri()


def client() -> MlflowClient:
    """A client of the resolved tracking URI; also makes it MLflow's global URI for this process."""
    import mlflow

    uri = tracking_uri()
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    return mlflow.MlflowClient(tracking_uri=uri)


def ensure_experiment(mlflow_client: MlflowClient, name: str) -> str:
    """The id of experiment `name`, created when missing (artifacts under the embedded root
    when the tracking URI is a database or folder this process writes directly)."""
    from mlflow.exceptions import MlflowException

    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            mlflow_client.restore_experiment(found.experiment_id)
        return found.experiment_id
    uri = mlflow_client.tracking_uri
    artifact_location = None
    if not uri.startswith(("http://", "https://", "databricks")):
        artifact_location = embedded_artifact_root() if uri == embedded_tracking_uri() else _artifacts_beside(uri)
    try:
        return mlflow_client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:
        found = mlflow_client.get_experiment_by_name(name)  # created meanwhile by a concurrent job
        if found is None:
            raise
        return found.experiment_id


def _artifacts_beside(uri: str) -> str | None:
    # A sqlite store other than the embedded one: artifacts in a folder beside the database.
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / "artifacts").absolute().as_uri()
    return None


def run_key(text: str) -> str:
    """The tag value for a caller's run key (hashed: tag filters need no quoting)."""
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def find_run(mlflow_client: MlflowClient, experiment_id: str, key: str) -> Run | None:
    """The run tagged with this run key (any status), oldest first if several."""
    runs = mlflow_client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{names.RUN_KEY}` = '{key}'",
        run_view_type=3,  # ViewType.ALL: a deleted run is still the run of this key
        order_by=["attributes.start_time ASC"],
        max_results=10,
    )
    return runs[0] if runs else None


def start_or_resume_run(
    mlflow_client: MlflowClient,
    *,
    experiment_id: str,
    key: str,
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
) -> tuple[str, bool]:
    """(run_id, resumed): the run of `key` (reopened as RUNNING) or a new one; `tags` are set either way."""
    existing = find_run(mlflow_client, experiment_id, key)
    all_tags = {names.RUN_KEY: key, **({PARENT_RUN_TAG: parent_run_id} if parent_run_id else {}), **dict(tags or {})}
    if existing is not None:
        run_id = existing.info.run_id
        if existing.info.lifecycle_stage == "deleted":
            mlflow_client.restore_run(run_id)
        mlflow_client.update_run(run_id, status="RUNNING")
        set_tags(mlflow_client, run_id, all_tags)
        return run_id, True
    run = mlflow_client.create_run(experiment_id, run_name=run_name, tags=names.tag_values(all_tags, limit=names.RUN_TAG_LIMIT))
    return run.info.run_id, False


def lineage_tags(lineage: Mapping[str, Any]) -> dict[str, str]:
    """`rayops.<name>` tags from a lineage dict; None values are left out, others stringified."""
    return {names.tag(name): value for name, value in names.tag_values(lineage, limit=names.RUN_TAG_LIMIT).items()}


def set_tags(mlflow_client: MlflowClient, run_id: str, tags: Mapping[str, Any]) -> None:
    from mlflow.entities import RunTag

    values = names.tag_values(tags, limit=names.RUN_TAG_LIMIT)
    if values:
        mlflow_client.log_batch(run_id, tags=[RunTag(k, v) for k, v in values.items()])


def log_params_once(mlflow_client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    """Log params not yet on the run; ParamConflict if one is there with another value."""
    from mlflow.entities import Param

    logged = mlflow_client.get_run(run_id).data.params
    new = []
    for name, value in flatten_params(params).items():
        if name in logged:
            if logged[name] != value:
                raise ParamConflict(run_id=run_id, name=name, logged=logged[name], given=value)
            continue
        new.append(Param(name, value))
    for start in range(0, len(new), 100):
        mlflow_client.log_batch(run_id, params=new[start : start + 100])


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Params as MLflow strings: nested dicts as dotted names, lists and others as JSON."""
    out: dict[str, str] = {}
    for name, value in params.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, prefix=f"{key}."))
        elif isinstance(value, str):
            out[key] = value
        else:
            out[key] = json.dumps(value, sort_keys=True, default=str)
    return out


def log_history(
    mlflow_client: MlflowClient, run_id: str, history: Iterable[Mapping[str, Any]], *, step_key: str = "epoch"
) -> int:
    """Log each entry's numeric values as metrics at step = entry[step_key]; skips (key, step, value)
    the run already has (logged live, or by an earlier try). Returns how many metric values were logged."""
    import math
    import time

    from mlflow.entities import Metric

    history = list(history)
    keys = {k for entry in history for k, v in entry.items() if k != step_key and _is_number(v)}
    logged = {key: {(m.step, m.value) for m in mlflow_client.get_metric_history(run_id, key)} for key in keys}
    now = int(time.time() * 1000)
    metrics = []
    for entry in history:
        step = int(entry[step_key])
        for key, value in entry.items():
            if key == step_key or not _is_number(value) or not math.isfinite(float(value)):
                continue
            if (step, float(value)) in logged[key]:
                continue
            metrics.append(Metric(key, float(value), now, step))
    for start in range(0, len(metrics), _BATCH_MAX):
        mlflow_client.log_batch(run_id, metrics=metrics[start : start + _BATCH_MAX])
    return len(metrics)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def logged_model_uri(experiment_id: str, run_id: str, *, checkpoint: str) -> str | None:
    """The URI of the model already logged on `run_id` from `checkpoint` (a retry re-uses it)."""
    import mlflow

    try:
        models = mlflow.search_logged_models(
            experiment_ids=[experiment_id],
            filter_string=f"source_run_id = '{run_id}'",
            output_format="list",
        )
    except Exception:  # an older server without logged-model search: log again
        return None
    for model in models:
        ready = str(getattr(model.status, "value", model.status)) == "READY"
        if ready and model.name == MODEL_NAME and (model.tags or {}).get(names.CHECKPOINT) == checkpoint:
            return model.model_uri
    return None


def log_model(
    mlflow_client: MlflowClient,
    run_id: str,
    *,
    experiment_id: str,
    checkpoint: LoadedCheckpoint,
    manifest: Mapping[str, Any],
    example_rows: pa.Table,
    checkpoint_uri: str,
    step: int = 0,
) -> str:
    """Log the checkpoint's model as the run's MLflow model "model": a pyfunc that takes raw rows
    (jobs/modeling/mlflow_model.py), with `example_rows` as its input example; returns its URI."""
    from airflow_provider_rayops.jobs.modeling import mlflow_model

    return mlflow_model.log_model(
        mlflow_client,
        run_id,
        name=MODEL_NAME,
        experiment_id=experiment_id,
        model=checkpoint.model,
        encoder=checkpoint.encoder,
        checkpoint_folder=Path(checkpoint.path),
        manifest=manifest,
        example_rows=example_rows,
        step=step,
        tags={names.CHECKPOINT: checkpoint_uri},
        model_format_tag=names.MODEL_FORMAT,
    )


def download_artifacts(artifact_uri: str, dest: str | os.PathLike[str]) -> Path:
    """The local copy, made under the folder `dest`, of the MLflow artifact at `artifact_uri`: a
    model (`models:/...`, `runs:/<id>/model`) or any file or folder of a run. MLflow's errors
    pass through; `models:/` and `runs:/` URIs resolve against MLflow's global tracking URI
    (`client()` sets it, else MLflow reads `MLFLOW_TRACKING_URI`)."""
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=str(dest)))


def end_run(mlflow_client: MlflowClient, run_id: str, *, status: str) -> None:
    mlflow_client.set_terminated(run_id, status=status)


def ray_job_id() -> str | None:
    """The Ray job's submission id (set by Ray for a job driver), else the running driver's job id."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if raw:
        try:
            submission = (json.loads(raw).get("metadata") or {}).get("job_submission_id")
        except (ValueError, AttributeError):
            submission = None
        if submission:
            return str(submission)
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_job_id()
    except Exception:
        return None
    return None


@contextlib.contextmanager
def tracked_run(
    mlflow_client: MlflowClient,
    *,
    experiment_id: str,
    key: str,
    params: Mapping[str, Any],
    run_name: str | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Iterator[str]:
    """The job's MLflow run (found again by `key` on a retry) with `params` logged, ended
    FINISHED when the block completes and FAILED when it raises. A retry with other params
    than the run has is the user's error (JobInputError), not a second run."""
    from airflow_provider_rayops.jobs.runtime import JobInputError

    run_id, _ = start_or_resume_run(mlflow_client, experiment_id=experiment_id, key=key, run_name=run_name, tags=tags)
    try:
        log_params_once(mlflow_client, run_id, params)
    except ParamConflict as exc:
        end_run(mlflow_client, run_id, status="FAILED")
        raise JobInputError(str(exc)) from None
    try:
        yield run_id
    except BaseException:
        end_run(mlflow_client, run_id, status="FAILED")
        raise
    end_run(mlflow_client, run_id, status="FINISHED")
