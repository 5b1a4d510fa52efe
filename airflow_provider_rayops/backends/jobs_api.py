"""Clients of the Ray Jobs REST API, one blocking (operator) and one async (trigger).

Both speak to the dashboard of a `RayEndpoint` with the token in `Authorization: Bearer`,
which is what Ray 2.60's token mode checks (ray/_private/authentication). They never log
headers. Every request has a timeout. Submission goes through Ray's own `JobSubmissionClient`
(it also packages and uploads a local `working_dir` / `py_modules` of the runtime_env), made
to pass our timeout to every request it sends (Ray's sets none); reads and stops are plain
HTTP. A job's log is followed through the dashboard's websocket tail, so each poll moves
only new text (`LogFollower` keeps what it needs: the last lines and the result).

`JobOutcome` is the one shape both paths end in: the operator's result or failure is built
from it, and the trigger's event payload is its `to_event()`.

No Airflow here.
"""

from __future__ import annotations

import collections
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
    RayJobTimedOut,
)
from airflow_provider_rayops.jobs.runtime import RESULT_MARKER, parse_result

HTTP_TIMEOUT_S = 30.0
# Lines longer than this are cut in the failure message and event payload (they live in the DB).
MAX_LINE_CHARS = 2000
# The outcome status when a job could not be followed to its end (not a Ray status).
ERROR_STATUS = "ERROR"
# The outcome status when the task's time limit ran out and the job was stopped.
TIMEOUT_STATUS = "TIMEOUT"
# A line still without its newline is handed out once it grows past this (bounded memory).
MAX_PARTIAL_LINE_CHARS = 1 << 20


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
            # Checked first with our own client: Ray's would print a long generic auth hint.
            self.version()
            try:
                self._submission_client = _timed_submission_client(self.endpoint, self.timeout_s)
            except ConnectionError as exc:
                raise _unreachable(self.endpoint, exc) from None
        return self._submission_client


def _timed_submission_client(endpoint: RayEndpoint, timeout_s: float):
    """Ray's JobSubmissionClient, with a timeout on every HTTP request it sends (uploads included)."""
    from ray.job_submission import JobSubmissionClient

    class TimedJobSubmissionClient(JobSubmissionClient):
        def _do_request(self, method, endpoint_path, **kwargs):
            kwargs.setdefault("timeout", timeout_s)
            return super()._do_request(method, endpoint_path, **kwargs)

    return TimedJobSubmissionClient(endpoint.dashboard_url, headers=endpoint.headers())


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

    async def tail_logs(self, submission_id: str):
        """The job's log as the driver writes it, in chunks, from its start; ends when the job ends.

        The dashboard's websocket tail: after the first pass over what is written already, only
        new text crosses the wire. A dropped connection raises BackendNotAvailable.
        """
        import aiohttp

        if self._session is None:
            raise RuntimeError("use AsyncRayJobsClient in `async with`")
        url = self.endpoint.dashboard_url.rstrip("/") + f"/api/jobs/{submission_id}/logs/tail"
        try:
            # No total timeout on a stream that lasts as long as the job; a silent peer is caught
            # by the heartbeat instead.
            async with self._session.ws_connect(
                url, timeout=aiohttp.ClientWSTimeout(ws_close=self.timeout_s), heartbeat=self.timeout_s,
            ) as ws:  # fmt: skip
                async for message in ws:
                    if message.type == aiohttp.WSMsgType.TEXT:
                        yield message.data
                    elif message.type == aiohttp.WSMsgType.ERROR:
                        raise _unreachable(self.endpoint, ws.exception() or ConnectionError("websocket error"))
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status == 404:
                raise JobNotFound(submission_id, self.endpoint.dashboard_url) from None
            if exc.status in (401, 403):
                raise _refused(self.endpoint, exc.status, exc.message) from None
            raise _unreachable(self.endpoint, exc) from None
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _unreachable(self.endpoint, exc) from None


class LogFollower:
    """Turns a job's log text, fed in chunks as it arrives, into complete lines handed out once.

    It keeps only what the end of the job needs, however long the log: the last
    `FAILURE_LOG_LINES` non-empty lines (for a failure message) and the last result line
    (`::rayops-result::{json}`). `consumed` counts the characters seen; after `restart()` (a
    new stream that starts the log over) that many characters are skipped.
    """

    def __init__(self) -> None:
        self.consumed = 0
        self._skip = 0
        self._partial = ""
        self.last_lines: collections.deque[str] = collections.deque(maxlen=FAILURE_LOG_LINES)
        self.result: dict[str, Any] | None = None

    def restart(self) -> None:
        """The next chunk starts the log from its beginning again."""
        self._skip = self.consumed

    def feed(self, chunk: str) -> list[str]:
        """The complete lines `chunk` finishes."""
        if self._skip:
            dropped = chunk[: self._skip]
            self._skip -= len(dropped)
            chunk = chunk[len(dropped) :]
        if not chunk:
            return []
        self.consumed += len(chunk)
        text = self._partial + chunk
        lines = text.split("\n")
        self._partial = lines.pop()
        if len(self._partial) > MAX_PARTIAL_LINE_CHARS:
            lines.append(self._partial)
            self._partial = ""
        return self._keep(lines)

    def catch_up(self, whole_log: str) -> list[str]:
        """The lines of `whole_log` (the log from its start) not handed out yet."""
        return self.feed(whole_log[self.consumed :]) if len(whole_log) > self.consumed else []

    def finish(self) -> list[str]:
        """The last line, if the log does not end with a newline."""
        rest, self._partial = self._partial, ""
        return self._keep([rest]) if rest else []

    def _keep(self, lines: list[str]) -> list[str]:
        for line in lines:
            if line.strip():
                self.last_lines.append(line if len(line) <= MAX_LINE_CHARS else line[:MAX_LINE_CHARS] + " [...]")
            if RESULT_MARKER in line:
                self.result = parse_result(line) or self.result
        return lines


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
    def of_job(cls, info: JobInfo, log: LogFollower | str, *, dashboard_url: str) -> JobOutcome:
        """How a terminal job ended, from its followed log (or its whole log text)."""
        if isinstance(log, str):
            text, log = log, LogFollower()
            log.catch_up(text)
            log.finish()
        succeeded = info.status is JobStatus.SUCCEEDED
        return cls(
            submission_id=info.submission_id,
            status=info.status.value,
            dashboard_url=dashboard_url,
            message=info.message or "",
            result=(log.result or {}) if succeeded else None,
            last_log_lines=() if succeeded else tuple(log.last_lines),
        )

    @classmethod
    def error(cls, *, submission_id: str, dashboard_url: str, message: str) -> JobOutcome:
        return cls(submission_id=submission_id, status=ERROR_STATUS, dashboard_url=dashboard_url, message=message)

    @classmethod
    def timed_out(cls, *, submission_id: str, dashboard_url: str, message: str, log: LogFollower) -> JobOutcome:
        return cls(
            submission_id=submission_id,
            status=TIMEOUT_STATUS,
            dashboard_url=dashboard_url,
            message=message,
            last_log_lines=tuple(log.last_lines),
        )

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
        if self.status == TIMEOUT_STATUS:
            raise RayJobTimedOut(
                submission_id=self.submission_id, message=self.message, last_log_lines=self.last_log_lines,
                dashboard_url=self.dashboard_url or None,
            )  # fmt: skip
        raise RayJobFailed(
            submission_id=self.submission_id,
            status=self.status,
            message=self.message,
            last_log_lines=self.last_log_lines,
            dashboard_url=self.dashboard_url or None,
        )
