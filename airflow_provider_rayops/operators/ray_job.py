"""SubmitRayJobOperator: run one command as a Ray job, wait for it, return its result.

The job is submitted through the Ray Jobs API of the compute profile's backend (an embedded
local head, or an existing cluster by Airflow connection). Its submission id comes from
dag_id, run_id, task_id and map index, so a retry of the task finds the job of the earlier
try: it re-attaches to a job still pending, running or succeeded (the job runs once), and
submits a new one (suffix -2, -3, ...) only after a failed or stopped one.

Deferrable by default: the worker slot is released while `RayJobTrigger` follows the job
from the triggerer; job log lines reach the task log as they come, either way.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.log import mask_secret

from airflow_provider_rayops.backends import get_backend, parse_profile
from airflow_provider_rayops.backends.base import JobAlreadyExists, JobInfo, JobStatus, RayEndpoint
from airflow_provider_rayops.backends.jobs_api import JobOutcome, LogFollower, RayJobsClient
from airflow_provider_rayops.jobs.runtime import JOB_ARGS_ENV
from airflow_provider_rayops.links.ray import XCOM_KEY, RayJobLink, link_xcom_value
from airflow_provider_rayops.triggers.ray_job import RayJobTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_MAX_READABLE = 96
_REATTACH = (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.SUCCEEDED)


def submission_base(*, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """The readable, deterministic stem of a task instance's Ray submission ids.

    `rayops-<dag>--<task>[--m<map>]--<run>-<hash8>`: sanitised and cut for readability, the
    hash of the exact four values keeps long or similar ids apart.
    """
    readable = f"{dag_id}--{task_id}" + (f"--m{map_index}" if map_index is not None and map_index >= 0 else "")
    readable = _UNSAFE.sub("_", f"{readable}--{run_id}")[:_MAX_READABLE].strip("_.-")
    digest = hashlib.sha1(json.dumps([dag_id, run_id, task_id, map_index]).encode()).hexdigest()[:8]
    return f"rayops-{readable}-{digest}"


def submission_id(base: str, attempt: int) -> str:
    """The id of the `attempt`-th submission (1, 2, ...) for a task instance."""
    return f"{base}-{attempt}"


class SubmitRayJobOperator(BaseOperator):
    """Run `entrypoint` as a Ray job and return the job's result dict (XCom `return_value`).

    :param entrypoint: shell command run by the job driver, e.g.
        `python -m airflow_provider_rayops.jobs.ingest`. Templated.
    :param runtime_env: Ray runtime_env (working_dir, pip, env_vars, ...). Templated.
    :param entrypoint_num_cpus: CPUs reserved for the driver.
    :param entrypoint_num_gpus: GPUs reserved for the driver.
    :param entrypoint_memory: memory (bytes) reserved for the driver.
    :param entrypoint_resources: custom Ray resources reserved for the driver.
    :param job_args: JSON-able dict the job reads with `jobs.job_args()` (sent as env var
        RAYOPS_JOB_ARGS; visible in the Ray dashboard, so no secrets). Templated.
    :param compute: a compute profile as a plain dict (`{"backend": "local"}` when None).
    :param storage_conn_id: a `rayops_s3` connection whose settings reach the job as env vars.
    :param with_mlflow: give the job MLflow's tracking settings (MLFLOW_TRACKING_URI and
        credentials) from `mlflow_conn_id`, or the embedded local store when that is None.
    :param mlflow_conn_id: a `rayops_mlflow` connection.
    :param deferrable: release the worker slot while the job runs (default).
    :param poll_interval: seconds between status polls.

    Returns what the job reported with `jobs.report_result()` (`{}` if nothing). A FAILED or
    STOPPED job raises `RayJobFailed` with the job's last log lines.
    """

    template_fields: Sequence[str] = ("entrypoint", "runtime_env", "job_args")
    template_fields_renderers = {"runtime_env": "json", "job_args": "json", "entrypoint": "bash"}
    operator_extra_links = (RayJobLink(),)
    ui_color = "#e6f1fb"

    def __init__(
        self,
        *,
        entrypoint: str,
        runtime_env: dict[str, Any] | None = None,
        entrypoint_num_cpus: float | None = None,
        entrypoint_num_gpus: float | None = None,
        entrypoint_memory: int | None = None,
        entrypoint_resources: dict[str, float] | None = None,
        job_args: dict[str, Any] | None = None,
        compute: dict[str, Any] | None = None,
        storage_conn_id: str | None = None,
        with_mlflow: bool = False,
        mlflow_conn_id: str | None = None,
        deferrable: bool = True,
        poll_interval: float = 2.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.entrypoint = entrypoint
        self.runtime_env = runtime_env
        self.entrypoint_num_cpus = entrypoint_num_cpus
        self.entrypoint_num_gpus = entrypoint_num_gpus
        self.entrypoint_memory = entrypoint_memory
        self.entrypoint_resources = entrypoint_resources
        self.job_args = job_args
        # Validated now, so a malformed profile is a DAG import error, not a task failure.
        self.compute = parse_profile(compute).model_dump(mode="json", exclude_none=True)
        self.storage_conn_id = storage_conn_id
        self.with_mlflow = with_mlflow
        self.mlflow_conn_id = mlflow_conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self._endpoint: RayEndpoint | None = None
        self._submission_id: str | None = None

    # -- execution -----------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any] | None:
        backend = get_backend(self.compute)
        endpoint = backend.endpoint()
        if endpoint.token:
            # A connection's password is masked by Airflow already; the local head's token is not.
            mask_secret(endpoint.token)
        self._endpoint = endpoint
        client = RayJobsClient(endpoint)
        ti = context["ti"]
        base = submission_base(dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, map_index=ti.map_index)
        info = self._attach_or_submit(client, base, context)
        self._submission_id = info.submission_id
        ti.xcom_push(key=XCOM_KEY, value=link_xcom_value(endpoint.dashboard_url, info.submission_id))
        self.log.info("Ray job %s: %s", info.submission_id, endpoint.job_url(info.submission_id))

        if info.status.is_terminal():
            outcome = JobOutcome.of_job(info, client.get_logs(info.submission_id), dashboard_url=endpoint.dashboard_url)
            return self._finish(outcome)
        if self.deferrable:
            self.defer(
                trigger=RayJobTrigger(
                    submission_id=info.submission_id,
                    compute=backend.profile_dict(),
                    poll_interval=self.poll_interval,
                ),
                method_name="execute_complete",
            )
        return self._finish(self._follow(client, info.submission_id, endpoint))

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any] | None:
        """Resume after the trigger; everything needed is in `event` (dag.test() passes nothing else)."""
        outcome = JobOutcome.from_event(event)
        if outcome.dashboard_url:
            context["ti"].xcom_push(key=XCOM_KEY, value=link_xcom_value(outcome.dashboard_url, outcome.submission_id))
        return self._finish(outcome)

    def on_kill(self) -> None:
        """Stop the Ray job this task is waiting for (non-deferrable mode; the trigger handles deferral)."""
        if self._endpoint is None or self._submission_id is None:
            return
        stopped = RayJobsClient(self._endpoint).stop(self._submission_id)
        self.log.info("Ray job %s %s", self._submission_id, "stopped" if stopped else "had already ended")

    # -- internals -----------------------------------------------------------------------

    def _attach_or_submit(self, client: RayJobsClient, base: str, context: Context) -> JobInfo:
        attempt, latest = 1, None
        while (info := client.get_job(submission_id(base, attempt))) is not None:
            latest, attempt = info, attempt + 1
        if latest is not None and latest.status in _REATTACH:
            self.log.info(
                "Re-attaching to Ray job %s (%s) submitted by an earlier try of this task",
                latest.submission_id,
                latest.status.value,
            )
            return latest
        if latest is not None:
            self.log.info("Earlier Ray job %s ended %s; submitting a new one", latest.submission_id, latest.status.value)
        sid = submission_id(base, attempt)
        ti = context["ti"]
        try:
            client.submit(
                submission_id=sid,
                entrypoint=self.entrypoint,
                runtime_env=self._runtime_env(),
                entrypoint_num_cpus=self.entrypoint_num_cpus,
                entrypoint_num_gpus=self.entrypoint_num_gpus,
                entrypoint_memory=self.entrypoint_memory,
                entrypoint_resources=self.entrypoint_resources,
                metadata={
                    "rayops_dag_id": ti.dag_id,
                    "rayops_run_id": ti.run_id,
                    "rayops_task_id": ti.task_id,
                    "rayops_map_index": str(ti.map_index),
                    "rayops_try_number": str(ti.try_number),
                },
            )
            self.log.info("Submitted Ray job %s: %s", sid, self.entrypoint)
        except JobAlreadyExists:
            # Another process submitted the same attempt between our look-up and our submit.
            self.log.info("Ray job %s was submitted concurrently; re-attaching", sid)
        return client.get_job(sid) or JobInfo(submission_id=sid, status=JobStatus.PENDING)

    def _runtime_env(self) -> dict[str, Any]:
        runtime_env = dict(self.runtime_env or {})
        env_vars = {str(k): str(v) for k, v in (runtime_env.get("env_vars") or {}).items()}
        if self.storage_conn_id:
            from airflow_provider_rayops.hooks.s3 import S3StorageHook

            env_vars.update(S3StorageHook(s3_conn_id=self.storage_conn_id).job_env())
        if self.with_mlflow:
            from airflow_provider_rayops.hooks.mlflow import MlflowHook

            env_vars.update(MlflowHook(mlflow_conn_id=self.mlflow_conn_id).job_env())
        if self.job_args is not None:
            env_vars[JOB_ARGS_ENV] = json.dumps(self.job_args, sort_keys=True, default=str)
        if env_vars:
            runtime_env["env_vars"] = env_vars
        return runtime_env

    def _follow(self, client: RayJobsClient, sid: str, endpoint: RayEndpoint) -> JobOutcome:
        follower = LogFollower()
        while True:
            info = client.get_job(sid)
            if info is None:
                return JobOutcome.error(
                    submission_id=sid, dashboard_url=endpoint.dashboard_url, message="the job disappeared from the cluster"
                )
            terminal = info.status.is_terminal()
            logs = client.get_logs(sid)
            for line in follower.new_lines(logs, final=terminal):
                self.log.info("%s", line)
            if terminal:
                return JobOutcome.of_job(info, logs, dashboard_url=endpoint.dashboard_url)
            time.sleep(self.poll_interval)

    def _finish(self, outcome: JobOutcome) -> dict[str, Any]:
        result = outcome.raise_for_status()
        self.log.info("Ray job %s succeeded; result: %s", outcome.submission_id, json.dumps(result, sort_keys=True))
        return result
