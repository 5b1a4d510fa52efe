"""What a Ray job submission is made of, apart from Airflow: whose job it is (`JobIdentity`: the
submission id, the RayJob name, the marks a retry checks before it re-attaches) and what it runs
with (`job_runtime_env`).

No Airflow import here (connections are read only when a connection id is given), so `rayops
render` prints the same ids and manifests as the operator sends, without starting Airflow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from airflow_provider_rayops import __version__
from airflow_provider_rayops.backends.kuberay.manifests import ANNOTATION_PREFIX, LABEL_DEPLOYMENT, LABEL_OWNER
from airflow_provider_rayops.config.compute import RAYJOB_NAME_MAX
from airflow_provider_rayops.hooks.ray_jobs_api import JobInfo
from airflow_provider_rayops.jobs.runtime import JOB_ARGS_ENV, PROVIDER_VERSION_ENV

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_NOT_DNS = re.compile(r"[^a-z0-9]+")
_NOT_LABEL = re.compile(r"[^A-Za-z0-9_.-]+")
_MAX_READABLE = 96


@dataclasses.dataclass(frozen=True)
class JobIdentity:
    """Which task instance, of which Airflow deployment and DAG run, a Ray job belongs to.

    It makes the submission id (`base`) and is recorded in the job's metadata; a job is only
    re-attached when its metadata says it is ours (`owns`). The DAG run's start time is part
    of it, so two deployments that both left `deployment_id` at its default still never share
    a job, and a DAG run cleared and started again gets new ids.
    """

    deployment: str
    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1
    run_started: str = ""

    @classmethod
    def of(cls, context: Mapping[str, Any], *, deployment: str) -> JobIdentity:
        ti = context["ti"]
        dag_run = context.get("dag_run")
        started = getattr(dag_run, "start_date", None)
        return cls(
            deployment=deployment,
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            task_id=ti.task_id,
            map_index=ti.map_index if ti.map_index is not None else -1,
            run_started=started.isoformat() if started is not None else "",
        )

    @property
    def digest(self) -> str:
        """80 bits of a hash of every field: what keeps long, similar or other deployments' ids apart
        (and, as a label value, what marks a KubeRay resource as this task instance's)."""
        return hashlib.sha256(json.dumps(dataclasses.astuple(self)).encode()).hexdigest()[:20]

    @property
    def base(self) -> str:
        """`rayops-<dag>--<task>[--m<map>]--<run>-<hash20>`: readable, cut to a bounded length."""
        readable = f"{self.dag_id}--{self.task_id}" + (f"--m{self.map_index}" if self.map_index >= 0 else "")
        readable = _UNSAFE.sub("_", f"{readable}--{self.run_id}")[:_MAX_READABLE].strip("_.-")
        return f"rayops-{readable}-{self.digest}"

    def resource_name(self, attempt: int) -> str:
        """The RayJob of the `attempt`-th submission: `<dag>-<task>-<hash10>-<attempt>`, a DNS-1035
        label of at most 47 characters (what KubeRay accepts), the same on every try."""
        tail = f"-{self.digest[:10]}-{attempt}"
        readable = _NOT_DNS.sub("-", f"{self.dag_id}-{self.task_id}".lower()).strip("-")
        readable = readable[: RAYJOB_NAME_MAX - len(tail) - 1].strip("-")
        if not readable[:1].isalpha():
            readable = ("j" + readable)[: RAYJOB_NAME_MAX - len(tail)].strip("-")
        return readable + tail

    def kube_marks(self, *, try_number: int) -> tuple[dict[str, str], dict[str, str]]:
        """(labels, annotations) of a KubeRay resource this task instance creates: the owner digest
        and deployment as labels (what a label value can hold), every field as an annotation."""
        labels = {LABEL_OWNER: self.digest, LABEL_DEPLOYMENT: label_value(self.deployment)}
        annotations = {f"{ANNOTATION_PREFIX}{key.removeprefix('rayops_').replace('_', '-')}": value
                       for key, value in self.metadata(try_number=try_number).items()}  # fmt: skip
        return labels, annotations

    def metadata(self, *, try_number: int) -> dict[str, str]:
        return {
            "rayops_deployment": self.deployment,
            "rayops_dag_id": self.dag_id,
            "rayops_run_id": self.run_id,
            "rayops_task_id": self.task_id,
            "rayops_map_index": str(self.map_index),
            "rayops_run_started": self.run_started,
            "rayops_try_number": str(try_number),
        }

    def owns(self, job: JobInfo) -> bool:
        """Whether `job` was submitted for this very task instance (metadata, not just the id)."""
        mine = self.metadata(try_number=0)
        return all(job.metadata.get(key) == value for key, value in mine.items() if key != "rayops_try_number")


def rayjob_name(job_id: str) -> str:
    """A RayJob name for a Ray job id: a DNS-1035 label of at most 47 characters (KubeRay's limit),
    readable, with a hash of the whole id so that long ids stay apart."""
    digest = hashlib.sha256(job_id.encode()).hexdigest()[:10]
    readable = _NOT_DNS.sub("-", job_id.lower()).strip("-")[: RAYJOB_NAME_MAX - len(digest) - 1].strip("-")
    if not readable[:1].isalpha():
        readable = ("j" + readable)[: RAYJOB_NAME_MAX - len(digest) - 1].strip("-")
    return f"{readable}-{digest}"


def label_value(text: str) -> str:
    """`text` as a Kubernetes label value: at most 63 of [A-Za-z0-9_.-], alphanumeric at both ends."""
    return _NOT_LABEL.sub("_", text)[:63].strip("_.-") or "none"


def submission_id(base: str, attempt: int) -> str:
    """The id of the `attempt`-th submission (1, 2, ...) for a task instance."""
    return f"{base}-{attempt}"


def first_try_since_clear(ti: Any, retries: int | None) -> int:
    """The try number this task instance started at after it was last cleared (1 if never).

    Clearing sets `max_tries = try_number + retries`, so this is Airflow's own formula. A job
    submitted by an earlier try belongs to a run the user asked to do again: never re-attached.
    """
    max_tries = getattr(ti, "max_tries", None)
    if max_tries is None:
        return 1
    return min(max(1, max_tries - (retries or 0) + 1), ti.try_number)


def job_runtime_env(
    base: Mapping[str, Any] | None,
    *,
    py_modules: Sequence[str] = (),
    rayops: bool = True,
    storage_conn_id: str | None = None,
    with_mlflow: bool = False,
    mlflow_conn_id: str | None = None,
    job_args: Mapping[str, Any] | None = None,
    credentials: bool = True,
) -> dict[str, Any]:
    """The runtime_env of what rayops runs on Ray (a job, or a Serve application): `base` with the
    shipped `py_modules`, the provider's version, the storage and MLflow settings of the
    connections (credentials: never log the result) and the job's arguments. `credentials=False`
    leaves the connections' keys and passwords out (a RayJob's spec is no place for them)."""
    runtime_env = dict(base or {})
    if py_modules:
        runtime_env["py_modules"] = [*py_modules, *(runtime_env.get("py_modules") or [])]
    env_vars = {str(k): str(v) for k, v in (runtime_env.get("env_vars") or {}).items()}
    if rayops:
        env_vars[PROVIDER_VERSION_ENV] = __version__
    if storage_conn_id:
        from airflow_provider_rayops.hooks.s3 import S3StorageHook

        env_vars.update(S3StorageHook(s3_conn_id=storage_conn_id).job_env(credentials=credentials))
    if with_mlflow:
        from airflow_provider_rayops.hooks.mlflow import MlflowHook

        env_vars.update(MlflowHook(mlflow_conn_id=mlflow_conn_id).job_env(credentials=credentials))
    if job_args is not None:
        env_vars[JOB_ARGS_ENV] = json.dumps(job_args, sort_keys=True, default=str)
    if env_vars:
        runtime_env["env_vars"] = env_vars
    return runtime_env
