"""Clients of the Ray Jobs REST API, one blocking (operator) and one async (trigger).

Both speak to the dashboard of a `RayEndpoint` with the token in `Authorization: Bearer`,
which is what Ray 2.60's token mode checks (ray/_private/authentication). They never log
headers. Submission goes through Ray's own `JobSubmissionClient`, which also packages and
uploads a local `working_dir` / `py_modules` of the runtime_env; reads and stops are plain
HTTP with timeouts (Ray's client sets none).

`JobOutcome` is the one shape both paths end in: the operator's result or failure is built
from it, and the trigger's event payload is its `to_event()`.

No Airflow here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from airflow_provider_rayops.backends.base import (
    FAILURE_LOG_LINES,
    BackendNotAvailable,
    JobAlreadyExists,
    JobInfo,
    JobNotFound,
    JobStatus,
    RayEndpoint,
    RayJobFailed,
)
from airflow_provider_rayops.jobs.runtime import parse_result

HTTP_TIMEOUT_S = 30.0
# Lines longer than this are cut in the failure message and event payload (they live in the DB).
MAX_LINE_CHARS = 2000
# The outcome status when a job could not be followed to its end (not a Ray status).
ERROR_STATUS = "ERROR"


def _refused(endpoint: RayEndpoint, status: int, body: str) -> BackendNotAvailable:
    if status == 401:
        why = "asked for a token and none was given"
    else:
        why = "refused the token"
    return BackendNotAvailable(
        f"the Ray dashboard at {endpoint.dashboard_url} {why} (HTTP {status}: {body.strip()[:200]}); "
        "check the password of the rayops_ray connection, or the local head's auth_token"
    )


def _unreachable(endpoint: RayEndpoint, exc: BaseException) -> BackendNotAvailable:
    return BackendNotAvailable(f"cannot reach the Ray dashboard at {endpoint.dashboard_url}: {type(exc).__name__}: {exc}")


class RayJobsClient:
    """Blocking client of one Ray cluster's Jobs API."""

    def __init__(self, endpoint: RayEndpoint, *, timeout_s: float = HTTP_TIMEOUT_S) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._submission_client = None

    def _request(self, method: str, path: str) -> Any:
        import requests

        url = self.endpoint.dashboard_url.rstrip("/") + path
        try:
            return requests.request(method, url, headers=self.endpoint.headers(), timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise _unreachable(self.endpoint, exc) from None

    def _check(self, response: Any) -> None:
        if response.status_code in (401, 403):
            raise _refused(self.endpoint, response.status_code, response.text)
        if response.status_code >= 400:
            raise BackendNotAvailable(
                f"the Ray Jobs API at {self.endpoint.dashboard_url} answered HTTP {response.status_code}: "
                f"{response.text.strip()[:500]}"
            )

    def version(self) -> dict[str, Any]:
        """GET /api/version: proves the dashboard is up and accepts our token."""
        r = self._request("GET", "/api/version")
        self._check(r)
        return r.json()

    def get_job(self, submission_id: str) -> JobInfo | None:
        """The job, or None when the cluster has no job with this id."""
        r = self._request("GET", f"/api/jobs/{submission_id}")
        if r.status_code == 404:
            return None
        self._check(r)
        return JobInfo.from_api(r.json())

    def list_jobs(self) -> list[JobInfo]:
        """Every submitted job the cluster knows (drivers started by hand are left out)."""
        r = self._request("GET", "/api/jobs/")
        self._check(r)
        return [JobInfo.from_api(job) for job in r.json() if job.get("submission_id")]

    def get_logs(self, submission_id: str) -> str:
        """The job driver's whole log so far ('' before the driver starts)."""
        r = self._request("GET", f"/api/jobs/{submission_id}/logs")
        if r.status_code == 404:
            raise JobNotFound(submission_id, self.endpoint.dashboard_url)
        self._check(r)
        return r.json().get("logs") or ""

    def stop(self, submission_id: str) -> bool:
        """Ask Ray to stop the job; False when it had already ended."""
        r = self._request("POST", f"/api/jobs/{submission_id}/stop")
        if r.status_code == 404:
            raise JobNotFound(submission_id, self.endpoint.dashboard_url)
        self._check(r)
        return bool(r.json().get("stopped"))

    def submit(
        self,
        *,
        submission_id: str,
        entrypoint: str,
        runtime_env: Mapping[str, Any] | None = None,
        entrypoint_num_cpus: float | None = None,
        entrypoint_num_gpus: float | None = None,
        entrypoint_memory: int | None = None,
        entrypoint_resources: Mapping[str, float] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> str:
        """Submit a job under `submission_id`; JobAlreadyExists if Ray has one by that id."""
        import requests

        client = self._jobs_client()
        try:
            return client.submit_job(
                entrypoint=entrypoint,
                submission_id=submission_id,
                runtime_env=dict(runtime_env) if runtime_env else None,
                metadata=dict(metadata) if metadata else None,
                entrypoint_num_cpus=entrypoint_num_cpus,
                entrypoint_num_gpus=entrypoint_num_gpus,
                entrypoint_memory=entrypoint_memory,
                entrypoint_resources=dict(entrypoint_resources) if entrypoint_resources else None,
            )
        except RuntimeError as exc:
            # Ray's client raises RuntimeError("Request failed with status code N: <body>").
            if "already exists" in str(exc):
                raise JobAlreadyExists(submission_id) from None
            raise BackendNotAvailable(f"Ray refused the job submission {submission_id}: {exc}") from None
        except (ConnectionError, requests.RequestException) as exc:
            # Whether Ray took the job is unknown: a retry of the task finds it by id if it did.
            raise _unreachable(self.endpoint, exc) from None

    def _jobs_client(self):
        if self._submission_client is None:
            from ray.job_submission import JobSubmissionClient

            # Checked first with our own client: Ray's would print a long generic auth hint.
            self.version()
            try:
                self._submission_client = JobSubmissionClient(
                    self.endpoint.dashboard_url, headers=self.endpoint.headers()
                )
            except ConnectionError as exc:
                raise _unreachable(self.endpoint, exc) from None
        return self._submission_client


class AsyncRayJobsClient:
    """Async client of one Ray cluster's Jobs API, for triggers (aiohttp; no blocking calls).

    Use as `async with AsyncRayJobsClient(endpoint) as client: ...`.
    """

    def __init__(self, endpoint: RayEndpoint, *, timeout_s: float = HTTP_TIMEOUT_S) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._session = None

    async def __aenter__(self) -> AsyncRayJobsClient:
        import aiohttp

        self._session = aiohttp.ClientSession(
            headers=self.endpoint.headers(), timeout=aiohttp.ClientTimeout(total=self.timeout_s)
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(self, method: str, path: str) -> tuple[int, str]:
        import aiohttp

        if self._session is None:
            raise RuntimeError("use AsyncRayJobsClient in `async with`")
        url = self.endpoint.dashboard_url.rstrip("/") + path
        try:
            async with self._session.request(method, url) as r:
                return r.status, await r.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _unreachable(self.endpoint, exc) from None

    def _check(self, status: int, body: str) -> None:
        if status in (401, 403):
            raise _refused(self.endpoint, status, body)
        if status >= 400:
            raise BackendNotAvailable(
                f"the Ray Jobs API at {self.endpoint.dashboard_url} answered HTTP {status}: {body.strip()[:500]}"
            )

    async def get_job(self, submission_id: str) -> JobInfo | None:
        status, body = await self._request("GET", f"/api/jobs/{submission_id}")
        if status == 404:
            return None
        self._check(status, body)
        return JobInfo.from_api(json.loads(body))

    async def get_logs(self, submission_id: str) -> str:
        status, body = await self._request("GET", f"/api/jobs/{submission_id}/logs")
        if status == 404:
            raise JobNotFound(submission_id, self.endpoint.dashboard_url)
        self._check(status, body)
        return json.loads(body).get("logs") or ""

    async def stop(self, submission_id: str) -> bool:
        status, body = await self._request("POST", f"/api/jobs/{submission_id}/stop")
        if status == 404:
            raise JobNotFound(submission_id, self.endpoint.dashboard_url)
        self._check(status, body)
        return bool(json.loads(body).get("stopped"))


class LogFollower:
    """Turns successive snapshots of a job's whole log into the lines not seen yet.

    The Jobs API returns the full driver log on each call; this keeps the offset of the last
    complete line handed out, so each line is logged once and a half-written line waits.
    """

    def __init__(self) -> None:
        self._offset = 0

    def new_lines(self, logs: str, *, final: bool = False) -> list[str]:
        if len(logs) < self._offset:  # a different log (should not happen): start over
            self._offset = 0
        chunk = logs[self._offset :]
        if not final:
            cut = chunk.rfind("\n")
            if cut < 0:
                return []
            chunk = chunk[: cut + 1]
        self._offset += len(chunk)
        return chunk.splitlines()


def tail_lines(logs: str, n: int = FAILURE_LOG_LINES) -> list[str]:
    """The last `n` non-empty lines of a log, each cut to a bounded length."""
    lines = [line for line in logs.splitlines() if line.strip()][-n:]
    return [line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + " [...]" for line in lines]


@dataclasses.dataclass(frozen=True)
class JobOutcome:
    """How a Ray job ended, in a form that survives a trigger event (plain JSON).

    status is a JobStatus value, or ERROR when the job could not be followed (head gone,
    token refused, job unknown); message then says why.
    """

    submission_id: str
    status: str
    dashboard_url: str
    message: str = ""
    result: dict[str, Any] | None = None
    last_log_lines: tuple[str, ...] = ()

    @classmethod
    def of_job(cls, info: JobInfo, logs: str, *, dashboard_url: str) -> JobOutcome:
        succeeded = info.status is JobStatus.SUCCEEDED
        return cls(
            submission_id=info.submission_id,
            status=info.status.value,
            dashboard_url=dashboard_url,
            message=info.message or "",
            result=(parse_result(logs) or {}) if succeeded else None,
            last_log_lines=() if succeeded else tuple(tail_lines(logs)),
        )

    @classmethod
    def error(cls, *, submission_id: str, dashboard_url: str, message: str) -> JobOutcome:
        return cls(submission_id=submission_id, status=ERROR_STATUS, dashboard_url=dashboard_url, message=message)

    @classmethod
    def from_event(cls, payload: Mapping[str, Any]) -> JobOutcome:
        return cls(
            submission_id=str(payload["submission_id"]),
            status=str(payload["status"]),
            dashboard_url=str(payload.get("dashboard_url") or ""),
            message=str(payload.get("message") or ""),
            result=payload.get("result"),
            last_log_lines=tuple(payload.get("last_log_lines") or ()),
        )

    def to_event(self) -> dict[str, Any]:
        return {
            "submission_id": self.submission_id,
            "status": self.status,
            "dashboard_url": self.dashboard_url,
            "message": self.message,
            "result": self.result,
            "last_log_lines": list(self.last_log_lines),
        }

    @property
    def succeeded(self) -> bool:
        return self.status == JobStatus.SUCCEEDED.value

    def raise_for_status(self) -> dict[str, Any]:
        """The job's result dict when it succeeded; otherwise the error that says why not."""
        if self.succeeded:
            return dict(self.result or {})
        if self.status == ERROR_STATUS:
            raise BackendNotAvailable(f"lost track of Ray job {self.submission_id}: {self.message}")
        raise RayJobFailed(
            submission_id=self.submission_id,
            status=self.status,
            message=self.message,
            last_log_lines=self.last_log_lines,
            dashboard_url=self.dashboard_url or None,
        )
