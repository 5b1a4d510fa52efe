"""Fixtures for the train and tune job tests: a seeded churn snapshot, an MLflow store, and a
helper that runs a job on the session's Ray head through the Jobs API, as the operator does."""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from airflow_provider_rayops.hooks.ray_jobs_api import JobStatus
from airflow_provider_rayops.jobs.datasets import make_churn
from airflow_provider_rayops.jobs.ingest import ingest
from airflow_provider_rayops.jobs.runtime import JOB_ARGS_ENV, parse_result

ROOT = Path(__file__).resolve().parents[2]
CHURN_ROWS = 3000
CHURN_SEED = 5
JOB_TIMEOUT_S = 300


@pytest.fixture(scope="session")
def churn_snapshot(tmp_path_factory) -> dict[str, Any]:
    """An ingest snapshot of seeded churn data (3000 rows, 20% validation): ingest's result dict."""
    folder = tmp_path_factory.mktemp("churn")
    pq.write_table(make_churn(CHURN_ROWS, seed=CHURN_SEED), folder / "churn.parquet")
    return ingest(source=f"file://{folder}/churn.parquet", target="churned", snapshot_root=f"file://{folder}/snapshots")


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """A sqlite MLflow store for the session (artifacts beside it); created once, it takes seconds."""
    from airflow_provider_rayops.jobs import tracking

    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder}/mlflow.db"
    import os

    saved = os.environ.get(tracking.TRACKING_URI_ENV)
    os.environ[tracking.TRACKING_URI_ENV] = uri
    try:
        tracking.client().search_experiments()  # creates the schema now, not inside a timed job
    finally:
        if saved is None:
            os.environ.pop(tracking.TRACKING_URI_ENV, None)
        else:
            os.environ[tracking.TRACKING_URI_ENV] = saved
    return uri


@dataclasses.dataclass(frozen=True)
class JobRun:
    submission_id: str
    status: JobStatus
    logs: str

    @property
    def result(self) -> dict[str, Any] | None:
        return parse_result(self.logs)


@pytest.fixture(scope="session")
def submit_ray_job(ray_head, mlflow_uri):
    """submit_ray_job(module, args, env=None) -> submission id: `python -m <module>` as a Ray job on
    the session head, with RAYOPS_JOB_ARGS, the session's MLflow store, this checkout on PYTHONPATH
    (for the test loops) and `env` (e.g. S3 settings) as the job's environment variables."""
    client = ray_head.client()

    def submit(module: str, args: dict[str, Any], *, env: dict[str, str] | None = None) -> str:
        submission_id = f"test-{module.rsplit('.', 1)[-1]}-{uuid.uuid4().hex[:10]}"
        client.submit(
            submission_id=submission_id,
            entrypoint=f"python -m {module}",
            runtime_env={
                "env_vars": {
                    JOB_ARGS_ENV: json.dumps(args),
                    "MLFLOW_TRACKING_URI": mlflow_uri,
                    "PYTHONPATH": str(ROOT),
                    **(env or {}),
                }
            },
        )
        return submission_id

    return submit


@pytest.fixture(scope="session")
def wait_for_ray_job(ray_head):
    """wait_for_ray_job(submission_id) -> JobRun, once the job has ended (stopped after `timeout_s`)."""
    client = ray_head.client()

    def wait(submission_id: str, *, timeout_s: float = JOB_TIMEOUT_S) -> JobRun:
        deadline = time.monotonic() + timeout_s
        while True:
            info = client.get_job(submission_id)
            if info is not None and info.status.is_terminal():
                return JobRun(submission_id=submission_id, status=info.status, logs=client.get_logs(submission_id))
            if time.monotonic() > deadline:
                client.stop(submission_id)
                raise TimeoutError(
                    f"job {submission_id} still {info.status if info else 'unknown'} after {timeout_s}s:\n{client.get_logs(submission_id)[-3000:]}"
                )
            time.sleep(0.25)  # a status GET on localhost: cheap, and each job ends sooner for the suite

    return wait


@pytest.fixture(scope="session")
def run_ray_job(submit_ray_job, wait_for_ray_job):
    """run_ray_job(module, args, env=None) -> JobRun: `submit_ray_job`, then `wait_for_ray_job`."""

    def run(module: str, args: dict[str, Any], *, env: dict[str, str] | None = None, timeout_s: float = JOB_TIMEOUT_S) -> JobRun:
        return wait_for_ray_job(submit_ray_job(module, args, env=env), timeout_s=timeout_s)

    return run
