"""SubmitRayJobOperator: run one command as a Ray job, wait for it, return its result.

The job is submitted through the Ray Jobs API of the compute profile's backend (an embedded
local head, or an existing cluster by Airflow connection). Its submission id comes from
dag_id, run_id, task_id and map index, so a retry of the task finds the job of the earlier
try: it re-attaches to a job still pending, running or succeeded (the job runs once), and
submits a new one (suffix -2, -3, ...) only after a failed or stopped one.

Deferrable by default: the worker slot is released while `RayJobTrigger` follows the job
from the triggerer; job log lines reach the task log as they come, either way.

`job_args` is data, never a Jinja template: run-time values go in as objects from
`operators.run_values` (a trigger Param, an upstream result, the run id) or Airflow XComArgs,
resolved in Python just before submission. Strings in it reach the job exactly as written.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.configuration import conf
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowTaskTimeout
from airflow.sdk.log import mask_secret
from pydantic import ValidationError

from airflow_provider_rayops.backends import get_backend, parse_profile
from airflow_provider_rayops.backends.base import ComputeBackend
from airflow_provider_rayops.backends.cluster_code import ClusterNotReady, JobCode, prepare_job_code
from airflow_provider_rayops.backends.code_package import CodeNotShippable
from airflow_provider_rayops.backends.kuberay import KubeRayBackend
from airflow_provider_rayops.backends.kuberay.client import ResourceExists, ResourceRefused
from airflow_provider_rayops.backends.kuberay.manifests import LABEL_OWNER, RAYJOBS, RayJobRequest, ray_job
from airflow_provider_rayops.backends.kuberay.status import RayJobState
from airflow_provider_rayops.hooks.ray import RayHook
from airflow_provider_rayops.hooks.ray_jobs_api import (
    CodeRefused,
    JobAlreadyExists,
    JobInfo,
    JobRefused,
    JobStatus,
    RayEndpoint,
    RayJobsClient,
    RayJobTimedOut,
    RayopsComputeError,
)
from airflow_provider_rayops.jobs.contracts import JobContract, describe_error
from airflow_provider_rayops.links.ray import XCOM_KEY, RayJobLink, link_xcom_value
from airflow_provider_rayops.operators.job_spec import JobIdentity, first_try_since_clear, job_runtime_env, submission_id
from airflow_provider_rayops.operators.run_values import RunValueRefused, resolve_run_values
from airflow_provider_rayops.triggers.job_outcome import JobOutcome
from airflow_provider_rayops.triggers.kuberay_job import KubeRayJobTrigger
from airflow_provider_rayops.triggers.ray_job import UNREACHABLE_TIMEOUT_S, RayJobTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context

_REATTACH = (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.SUCCEEDED)
# Airflow's trigger timeout fires this long after our own deadline, only if the trigger could not.
DEFER_GRACE_S = 120.0
# On kuberay, KubeRay stops a job at activeDeadlineSeconds; the trigger deletes the RayJob itself
# only this long after, if KubeRay did not.
KUBERAY_DEADLINE_GRACE_S = 30.0
DEADLINE_ANNOTATION = "rayops.io/deadline"


DEFAULT_DEPLOYMENT = "airflow"


class JobResultInvalid(AirflowFailException):
    """A rayops job reported a result its contract does not allow (a version mismatch or a bug); not retried."""


def deployment_id() -> str:
    """This Airflow deployment's name in the Ray jobs it submits: `[rayops] deployment_id`
    (AIRFLOW__RAYOPS__DEPLOYMENT_ID). Set it when several deployments share one Ray cluster."""
    return conf.get("rayops", "deployment_id", fallback=DEFAULT_DEPLOYMENT) or DEFAULT_DEPLOYMENT


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
        RAYOPS_JOB_ARGS; visible in the Ray dashboard, so no secrets). Never rendered by Jinja:
        put run-time values in as `run_values` objects or XComArgs; shown resolved in the UI's
        rendered-template view.
    :param ray_conn_id: the `rayops_ray` connection of the Ray cluster to run on (dashboard URL
        and token). Templated. Used when `compute` is not given; default `rayops_ray_default`.
    :param compute: a compute profile as a plain dict, instead of `ray_conn_id`: e.g.
        `{"backend": "local"}` for the embedded head this machine starts (what pipelines use).
    :param storage_conn_id: a `rayops_s3` connection whose settings reach the job as env vars
        (none when None). Templated.
    :param contract: a `jobs.contracts.JobContract` (rayops' own jobs): the resolved `job_args`
        are validated against its argument model before anything is submitted (a bad value fails
        the task without a retry, naming the argument), and the job's result against its result
        model before it becomes the task's XCom.
    :param with_mlflow: give the job MLflow's tracking settings (MLFLOW_TRACKING_URI and
        credentials) from `mlflow_conn_id`, or the embedded local store when that is None.
    :param mlflow_conn_id: a `rayops_mlflow` connection (None: the embedded local store). Templated.
    :param code: what the job imports besides Ray (`backends.cluster_code.JobCode`): rayops' job
        code, the pipeline's own modules to ship. Default: rayops' job code when `contract` is
        given, else nothing. Before submitting, the cluster is checked and what it lacks is
        uploaded, as the compute profile's `code:` key says; a cluster that cannot run the job
        fails the task without a retry, naming what is missing and the key that fixes it.
    :param templated_config: render the three conn ids and `runtime_env` with Jinja (default);
        False uses them exactly as given (the DAG factory: its values come from pipeline YAML).
        `template_conn_ids` is its former name, still accepted with a DeprecationWarning.
    :param deferrable: release the worker slot while the job runs; default: Airflow's
        `[operators] default_deferrable` (pipelines built from YAML always defer).
    :param poll_interval: seconds between status polls.
    :param unreachable_timeout: seconds the Ray dashboard may fail to answer while the task
        waits before the task fails (the head died, the network broke).

    `execution_timeout` bounds the whole wait, deferred or not: when it runs out, the Ray job is
    stopped and the task fails with AirflowTaskTimeout (and is retried like any timeout).

    Returns what the job reported with `jobs.report_result()` (`{}` if nothing). A FAILED or
    STOPPED job raises `RayJobFailed` with the job's last log lines.
    """

    template_fields: Sequence[str] = ("entrypoint", "runtime_env", "job_args", "ray_conn_id", "storage_conn_id", "mlflow_conn_id")
    template_fields_renderers = {"runtime_env": "json", "job_args": "json", "entrypoint": "bash"}
    # Listed above so the UI shows them as sent, but resolved without Jinja (render_template_fields).
    data_fields: Sequence[str] = ("job_args",)
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
        contract: JobContract | None = None,
        ray_conn_id: str | None = None,
        compute: dict[str, Any] | None = None,
        storage_conn_id: str | None = None,
        with_mlflow: bool = False,
        mlflow_conn_id: str | None = None,
        code: JobCode | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        templated_config: bool = True,
        template_conn_ids: bool | None = None,
        poll_interval: float = 1.0,
        unreachable_timeout: float = UNREACHABLE_TIMEOUT_S,
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
        self.contract = contract
        if ray_conn_id is not None and compute is not None:
            raise ValueError("give either ray_conn_id (a Ray cluster by connection) or compute (a profile), not both")
        self.ray_conn_id = ray_conn_id
        if template_conn_ids is not None:
            warnings.warn(
                "SubmitRayJobOperator(template_conn_ids=...) is now templated_config=... (it covers runtime_env too)",
                DeprecationWarning,
                stacklevel=2,
            )
            templated_config = template_conn_ids
        if not templated_config:
            # Used exactly as given: the DAG factory's values are config text, which never reaches Jinja.
            self.data_fields = (*type(self).data_fields, "runtime_env", "ray_conn_id", "storage_conn_id", "mlflow_conn_id")
        self.code = code if code is not None else JobCode(rayops=contract is not None)
        # Validated now, so a malformed profile is a DAG import error, not a task failure.
        self.compute = parse_profile(compute).model_dump(mode="json", exclude_none=True) if compute is not None else None
        self.storage_conn_id = storage_conn_id
        self.with_mlflow = with_mlflow
        self.mlflow_conn_id = mlflow_conn_id
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.unreachable_timeout = unreachable_timeout
        self._endpoint: RayEndpoint | None = None
        self._submission_id: str | None = None
        self._kuberay_job: tuple[KubeRayBackend, str] | None = None

    # -- execution -----------------------------------------------------------------------

    def render_template_fields(self, context: Context, jinja_env: Any = None) -> None:
        """Jinja for `entrypoint` and `runtime_env`; `job_args` only has its run-time values resolved."""
        if not jinja_env:
            jinja_env = self.get_template_env()
        templated = [name for name in self.template_fields if name not in self.data_fields]
        self._do_render_template_fields(self, templated, context, jinja_env, set())
        try:
            self.job_args = resolve_run_values(self.job_args, context)
        except RunValueRefused as exc:
            raise AirflowFailException(str(exc)) from None
        if self.contract is not None:
            try:
                self.job_args = self.contract.args.model_validate(self.job_args or {}).model_dump(mode="json")
            except ValidationError as exc:
                what = f"{self.contract.name} job argument"
                raise AirflowFailException(describe_error(exc, self.contract.args, what=what)) from None

    def execute(self, context: Context) -> dict[str, Any] | None:
        backend = get_backend(self._profile())
        if isinstance(backend, KubeRayBackend):
            return self._execute_on_kuberay(context, backend)
        endpoint = backend.endpoint()
        if endpoint.token:
            # A connection's password is masked by Airflow already; the local head's token is not.
            mask_secret(endpoint.token)
        self._endpoint = endpoint
        client = RayJobsClient(endpoint)
        ti = context["ti"]
        identity = JobIdentity.of(context, deployment=deployment_id())
        info = self._attach_or_submit(client, identity, context, backend)
        self._submission_id = info.submission_id
        ti.xcom_push(key=XCOM_KEY, value=link_xcom_value(endpoint.dashboard_url, info.submission_id))
        self.log.info("Ray job %s: %s", info.submission_id, endpoint.job_url(info.submission_id))

        if info.status.is_terminal():
            outcome = JobOutcome.of_job(info, client.get_logs(info.submission_id), dashboard_url=endpoint.dashboard_url)
            return self._finish(outcome)
        remaining = self._time_left(ti)
        trigger = RayJobTrigger(
            submission_id=info.submission_id,
            compute=backend.profile_dict(),
            poll_interval=self.poll_interval,
            unreachable_timeout=self.unreachable_timeout,
            deadline=time.time() + remaining if remaining is not None else None,
        )
        return self._wait(trigger, remaining)

    def _wait(self, trigger: RayJobTrigger, remaining: float | None) -> dict[str, Any]:
        """Follow the job to its end: deferred to the triggerer, or in this worker."""
        if self.deferrable:
            # Airflow 3.3 does not apply execution_timeout to deferred time: the trigger stops the
            # job at the deadline itself, and Airflow's trigger timeout is the backstop.
            timeout = dt.timedelta(seconds=remaining + DEFER_GRACE_S) if remaining is not None else None
            self.defer(trigger=trigger, method_name="execute_complete", timeout=timeout)
        # In the worker, the same follower; Airflow's own timeout calls on_kill, which stops the job.
        return self._finish(asyncio.run(trigger.follow(log=self.log)))

    def _execute_on_kuberay(self, context: Context, backend: KubeRayBackend) -> dict[str, Any]:
        """Create this task instance's RayJob (or re-attach to the one an earlier try created) and
        follow it: KubeRay starts the cluster and submits the entrypoint itself."""
        ti = context["ti"]
        identity = JobIdentity.of(context, deployment=deployment_id())
        client = backend.client()
        first_try = first_try_since_clear(ti, self.retries)
        latest, attempt = self._latest_ray_job(client, identity)
        while (squatter := client.get(RAYJOBS, identity.resource_name(attempt))) is not None:
            self.log.warning(
                "RayJob %s/%s has this task's name but not its owner label (%s=%s); leaving it be",
                backend.profile.namespace, identity.resource_name(attempt), LABEL_OWNER,
                (squatter.get("metadata") or {}).get("labels", {}).get(LABEL_OWNER),
            )  # fmt: skip
            attempt += 1
        remaining = self._time_left(ti)
        task_deadline = remaining is not None and (
            backend.profile.active_deadline_s is None or remaining < backend.profile.active_deadline_s
        )
        if latest is not None and self._reattach(latest.job_info(), identity, first_try):
            name, sid = latest.name, latest.job_id
            task_deadline = latest.annotations.get(DEADLINE_ANNOTATION) == "task"
        else:
            name, sid = identity.resource_name(attempt), submission_id(identity.base, attempt)
            self._create_ray_job(
                client, backend, identity, name=name, sid=sid, try_number=ti.try_number, remaining=remaining,
                task_deadline=task_deadline,
            )  # fmt: skip
        self._kuberay_job = (backend, name)
        self.log.info("RayJob %s/%s runs Ray job %s", backend.profile.namespace, name, sid)
        trigger = KubeRayJobTrigger(
            name=name,
            submission_id=sid,
            compute=backend.profile_dict(),
            poll_interval=self.poll_interval,
            unreachable_timeout=self.unreachable_timeout,
            # KubeRay enforces activeDeadlineSeconds itself; the trigger deletes the RayJob only if it did not.
            deadline=time.time() + remaining + KUBERAY_DEADLINE_GRACE_S if remaining is not None else None,
            task_deadline=task_deadline,
        )
        return self._wait(trigger, remaining)

    @staticmethod
    def _latest_ray_job(client: Any, identity: JobIdentity) -> tuple[RayJobState | None, int]:
        """This task instance's latest RayJob and the attempt after it. Found by owner label (an
        earlier attempt may be gone by its clean-up while a later one runs) and checked by name."""
        latest: RayJobState | None = None
        found = 0
        for obj in client.list(RAYJOBS, labels={LABEL_OWNER: identity.digest}):
            state = RayJobState.of(obj)
            number = state.name.rsplit("-", 1)[-1]
            if number.isdigit() and state.name == identity.resource_name(int(number)) and int(number) > found:
                latest, found = state, int(number)
        return latest, found + 1

    def _create_ray_job(
        self,
        client: Any,
        backend: KubeRayBackend,
        identity: JobIdentity,
        *,
        name: str,
        sid: str,
        try_number: int,
        remaining: float | None,
        task_deadline: bool,
    ) -> None:
        if self.code.modules:
            # Nothing can be uploaded before the RayJob's cluster exists: the job imports them from the image.
            self.log.info(
                "the kuberay backend ships no code: %s must be in the image %s (see docker/ray.Dockerfile)",
                ", ".join(self.code.modules), backend.profile.image,
            )  # fmt: skip
        if self.entrypoint_memory is not None:
            raise AirflowFailException(
                "entrypoint_memory cannot be set on the kuberay backend: a RayJob reserves CPUs, GPUs and custom "
                "resources for its driver (entrypoint_num_cpus, entrypoint_num_gpus, entrypoint_resources), not memory"
            )
        labels, annotations = identity.kube_marks(try_number=try_number)
        # Whose deadline activeDeadlineSeconds is, for a retry that re-attaches: the task's (a timeout) or the profile's.
        annotations[DEADLINE_ANNOTATION] = "task" if task_deadline else "profile"
        request = RayJobRequest(
            name=name,
            job_id=sid,
            entrypoint=self.entrypoint,
            runtime_env=self._runtime_env(credentials=False),
            metadata=identity.metadata(try_number=try_number),
            labels=labels,
            annotations=annotations,
            entrypoint_num_cpus=self.entrypoint_num_cpus,
            entrypoint_num_gpus=self.entrypoint_num_gpus,
            entrypoint_resources=self.entrypoint_resources,
            deadline_s=int(remaining) + 1 if remaining is not None else None,
        )
        try:
            client.create(RAYJOBS, ray_job(backend.profile, request))
            self.log.info("Created RayJob %s/%s: %s", backend.profile.namespace, name, self.entrypoint)
        except ResourceExists:
            # Another process created the same attempt between our look-up and our create.
            self.log.info("RayJob %s was created concurrently; re-attaching", name)
        except ResourceRefused as exc:  # the API server's schema or admission: the profile must change
            raise AirflowFailException(str(exc)) from None

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any] | None:
        """Resume after the trigger; everything needed is in `event` (dag.test() passes nothing else)."""
        outcome = JobOutcome.from_event(event)
        if outcome.dashboard_url:
            context["ti"].xcom_push(key=XCOM_KEY, value=link_xcom_value(outcome.dashboard_url, outcome.submission_id))
        return self._finish(outcome)

    def on_kill(self) -> None:
        """Stop the Ray job this task is waiting for (non-deferrable mode; the trigger handles deferral);
        on kuberay, delete the RayJob (and with it the cluster KubeRay made for it).

        Best effort: the task is being killed either way, so a cluster that does not answer is logged."""
        if self._kuberay_job is not None:
            backend, name = self._kuberay_job
            try:
                deleted = backend.client().delete(RAYJOBS, name)
            except RayopsComputeError as exc:
                self.log.warning("Could not delete RayJob %s (%s); delete it with kubectl", name, exc)
                return
            self.log.info("RayJob %s %s", name, "deleted" if deleted else "was already gone")
            return
        if self._endpoint is None or self._submission_id is None:
            return
        try:
            stopped = RayJobsClient(self._endpoint).stop(self._submission_id)
        except RayopsComputeError as exc:
            self.log.warning("Could not stop Ray job %s (%s); stop it from the dashboard", self._submission_id, exc)
            return
        self.log.info("Ray job %s %s", self._submission_id, "stopped" if stopped else "had already ended")

    def _profile(self) -> dict[str, Any]:
        """Where the job runs: `compute`, or the Ray cluster of `ray_conn_id` (rendered by now)."""
        return compute_profile(self.compute, self.ray_conn_id)

    # -- internals -----------------------------------------------------------------------

    def _attach_or_submit(
        self, client: RayJobsClient, identity: JobIdentity, context: Context, backend: ComputeBackend
    ) -> JobInfo:
        """Re-attach to this task instance's job of this try or an earlier try since the last clear
        (pending, running or succeeded: it runs once), else submit the next attempt."""
        ti = context["ti"]
        first_try = first_try_since_clear(ti, self.retries)
        attempt, latest = 1, None
        while (info := client.get_job(submission_id(identity.base, attempt))) is not None:
            latest, attempt = info, attempt + 1
        if latest is not None and self._reattach(latest, identity, first_try):
            return latest
        sid = submission_id(identity.base, attempt)
        py_modules = self._prepare_code(client, backend)
        try:
            client.submit(
                submission_id=sid,
                entrypoint=self.entrypoint,
                runtime_env=self._runtime_env(py_modules),
                entrypoint_num_cpus=self.entrypoint_num_cpus,
                entrypoint_num_gpus=self.entrypoint_num_gpus,
                entrypoint_memory=self.entrypoint_memory,
                entrypoint_resources=self.entrypoint_resources,
                metadata=identity.metadata(try_number=ti.try_number),
            )
            self.log.info("Submitted Ray job %s: %s", sid, self.entrypoint)
        except JobAlreadyExists:
            # Another process submitted the same attempt between our look-up and our submit.
            self.log.info("Ray job %s was submitted concurrently; re-attaching", sid)
        except CodeRefused as exc:  # a local working_dir or py_modules that cannot be shipped
            raise AirflowFailException(str(exc)) from None
        return client.get_job(sid) or JobInfo(submission_id=sid, status=JobStatus.PENDING)

    def _reattach(self, latest: JobInfo, identity: JobIdentity, first_try: int) -> bool:
        """Whether the latest job with this task instance's id is the one to follow: it is this task
        instance's (its metadata, not just the id), was submitted by a try since the last clear, and
        is pending, running or succeeded (it runs once). Says why not in the log."""
        if not identity.owns(latest):
            self.log.warning(
                "Ray job %s has this task's id but not its identity (deployment %r, run %r); not re-attaching",
                latest.submission_id, latest.metadata.get("rayops_deployment"), latest.metadata.get("rayops_run_id"),
            )  # fmt: skip
            return False
        if int(latest.metadata.get("rayops_try_number", "0")) < first_try:
            self.log.info(
                "Ray job %s (%s) was submitted before this task was cleared (try %s < %s); submitting a new one",
                latest.submission_id, latest.status.value, latest.metadata.get("rayops_try_number"), first_try,
            )  # fmt: skip
            return False
        if latest.status in _REATTACH:
            self.log.info(
                "Re-attaching to Ray job %s (%s) submitted by an earlier try of this task",
                latest.submission_id,
                latest.status.value,
            )
            return True
        self.log.info("Earlier Ray job %s ended %s; submitting a new one", latest.submission_id, latest.status.value)
        return False

    def _prepare_code(self, client: RayJobsClient, backend: ComputeBackend) -> tuple[str, ...]:
        """Check the cluster can run the job and upload what it lacks; the py_modules URIs to add."""
        try:
            return prepare_job_code(client, backend.profile, self.code, log=self.log.info).py_modules
        except (ClusterNotReady, CodeNotShippable) as exc:
            # A retry would meet the same cluster: the message says what to install or which key to set.
            raise AirflowFailException(str(exc)) from None

    def _runtime_env(self, py_modules: Sequence[str] = (), *, credentials: bool = True) -> dict[str, Any]:
        return job_runtime_env(
            self.runtime_env,
            py_modules=py_modules,
            credentials=credentials,
            rayops=self.code.rayops,
            storage_conn_id=self.storage_conn_id,
            mlflow_conn_id=self.mlflow_conn_id if self.with_mlflow else None,
            with_mlflow=self.with_mlflow,
            job_args=self.job_args,
        )

    def _time_left(self, ti: Any) -> float | None:
        """Seconds of execution_timeout left for this try (None: no limit)."""
        if self.execution_timeout is None:
            return None
        started = getattr(ti, "start_date", None)
        elapsed = (dt.datetime.now(dt.UTC) - started).total_seconds() if started is not None else 0.0
        return max(1.0, self.execution_timeout.total_seconds() - max(0.0, elapsed))

    def _finish(self, outcome: JobOutcome) -> dict[str, Any]:
        try:
            result = outcome.raise_for_status()
        except RayJobTimedOut as exc:
            raise AirflowTaskTimeout(str(exc)) from None
        except JobRefused as exc:  # KubeRay refused the RayJob: the same profile would be refused again
            raise AirflowFailException(str(exc)) from None
        if self.contract is not None:
            try:
                result = self.contract.result.model_validate(result).model_dump(mode="json")
            except ValidationError as exc:
                raise JobResultInvalid(
                    f"Ray job {outcome.submission_id} reported a result that does not fit the {self.contract.name} "
                    f"job's contract: {describe_error(exc, self.contract.result, what='result field')}"
                ) from None
        self.log.info("Ray job %s succeeded; result: %s", outcome.submission_id, json.dumps(result, sort_keys=True))
        return result


def compute_profile(compute: dict[str, Any] | None, ray_conn_id: str | None) -> dict[str, Any]:
    """Where an operator runs its work: the `compute` profile, or the Ray cluster of `ray_conn_id`
    (default `rayops_ray_default`)."""
    if compute is not None:
        return compute
    return {"backend": "ray", "conn_id": ray_conn_id or RayHook.default_conn_name}
