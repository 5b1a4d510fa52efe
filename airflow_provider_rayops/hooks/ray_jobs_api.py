"""The Ray Jobs REST API: what it says (job status, job info, errors) and two clients of it.

`RayJobsClient` (blocking, for operators) and `AsyncRayJobsClient` (aiohttp, for triggers) speak
to the dashboard of a `RayEndpoint` with the token in `Authorization: Bearer`, which is what Ray
2.60's token mode checks. They never log headers, and every request has a timeout. `RayHook`
builds them from an Airflow connection; nothing here imports Airflow or Ray, so the provider
talks to a cluster with requests and aiohttp alone, and uploads the code a job needs (a local
`working_dir` or `py_modules`) the way Ray's own client does (backends/code_package.py).
A job's log is followed through the dashboard's websocket tail, so each poll moves only new text.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import aiohttp


class JobStatus(str, enum.Enum):
    """A Ray job's status, as the Jobs API reports it."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    STOPPED = "STOPPED"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"

    def is_terminal(self) -> bool:
        return self in (JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED)

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class JobInfo:
    """One Ray job as the Jobs API describes it."""

    submission_id: str
    status: JobStatus
    entrypoint: str = ""
    message: str | None = None
    error_type: str | None = None
    start_time_ms: int | None = None
    end_time_ms: int | None = None
    driver_exit_code: int | None = None
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def from_api(cls, data: Mapping[str, Any]) -> JobInfo:
        """From the JSON of `GET /api/jobs/{id}`."""
        return cls(
            submission_id=str(data.get("submission_id") or data.get("job_id") or ""),
            status=JobStatus(data["status"]),
            entrypoint=str(data.get("entrypoint") or ""),
            message=data.get("message"),
            error_type=data.get("error_type"),
            start_time_ms=data.get("start_time"),
            end_time_ms=data.get("end_time"),
            driver_exit_code=data.get("driver_exit_code"),
            metadata=dict(data.get("metadata") or {}),
        )


@dataclasses.dataclass(frozen=True)
class RayEndpoint:
    """A Ray dashboard (Jobs API) and the token it wants; the token never shows in repr."""

    dashboard_url: str
    token: str | None = dataclasses.field(default=None, repr=False)

    def headers(self) -> dict[str, str]:
        """HTTP headers for the dashboard: Ray's token mode wants `Authorization: Bearer <token>`."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def job_url(self, submission_id: str) -> str:
        """The job's page in the Ray dashboard."""
        return job_url(self.dashboard_url, submission_id)


def job_url(dashboard_url: str, submission_id: str) -> str:
    """The page of one job in the Ray dashboard's web UI."""
    return f"{dashboard_url.rstrip('/')}/#/jobs/{submission_id}"


class RayopsComputeError(Exception):
    """Base of the compute plane's errors."""


class BackendNotAvailable(RayopsComputeError):
    """The backend cannot be used: not built yet, not reachable, refused our token, failed to start."""


class JobNotFound(RayopsComputeError):
    """The Ray cluster has no job with this submission id (never submitted, or the head was restarted)."""

    def __init__(self, submission_id: str, dashboard_url: str) -> None:
        self.submission_id = submission_id
        self.dashboard_url = dashboard_url
        super().__init__(f"Ray job {submission_id} does not exist on {dashboard_url}")

    def __reduce__(self):
        return (type(self), (self.submission_id, self.dashboard_url))


class CodeRefused(RayopsComputeError):
    """Code a job names cannot be shipped (missing, unreadable, too large); retrying will not help."""


class JobAlreadyExists(RayopsComputeError):
    """A job with this submission id was submitted already (Ray keeps ids unique)."""

    def __init__(self, submission_id: str) -> None:
        self.submission_id = submission_id
        super().__init__(f"a Ray job with submission id {submission_id} already exists")

    def __reduce__(self):
        return (type(self), (self.submission_id,))


class RayJobFailed(RayopsComputeError):
    """A Ray job ended FAILED or STOPPED. Carries what a user needs to act: id, status, Ray's message, last log lines."""

    def __init__(
        self,
        *,
        submission_id: str,
        status: JobStatus | str,
        message: str | None = None,
        last_log_lines: Sequence[str] = (),
        dashboard_url: str | None = None,
    ) -> None:
        self.submission_id = submission_id
        self.status = JobStatus(status)
        self.message = message or ""
        self.last_log_lines = tuple(last_log_lines)
        self.dashboard_url = dashboard_url
        super().__init__(self._format())

    def _format(self) -> str:
        # Ray's own message repeats the log tail after a comma; the first line says what happened.
        reason = self.message.strip().splitlines()[0] if self.message.strip() else "no message from Ray"
        head = f"Ray job {self.submission_id} {self.status.value}: {reason}"
        if self.dashboard_url:
            head += f"\nDashboard: {job_url(self.dashboard_url, self.submission_id)}"
        if not self.last_log_lines:
            return head + "\n(the job wrote no log lines)"
        return head + f"\n--- last {len(self.last_log_lines)} log lines ---\n" + "\n".join(self.last_log_lines)

    def __reduce__(self):
        return (
            _rebuild_job_failed,
            (self.submission_id, self.status.value, self.message, self.last_log_lines, self.dashboard_url),
        )


class JobRefused(RayopsComputeError):
    """The platform refused to run the job as configured (KubeRay's validation): a retry meets the same refusal."""


class RayJobTimedOut(RayopsComputeError):
    """The task's time limit ran out while its Ray job still ran; the job was stopped."""

    def __init__(
        self, *, submission_id: str, message: str, last_log_lines: Sequence[str] = (), dashboard_url: str | None = None
    ) -> None:
        self.submission_id = submission_id
        self.message = message
        self.last_log_lines = tuple(last_log_lines)
        self.dashboard_url = dashboard_url
        text = f"Ray job {submission_id}: {message}"
        if dashboard_url:
            text += f"\nDashboard: {job_url(dashboard_url, submission_id)}"
        if self.last_log_lines:
            text += f"\n--- last {len(self.last_log_lines)} log lines ---\n" + "\n".join(self.last_log_lines)
        super().__init__(text)

    def __reduce__(self):
        return (_rebuild_timed_out, (self.submission_id, self.message, self.last_log_lines, self.dashboard_url))


def _rebuild_timed_out(submission_id, message, last_log_lines, dashboard_url) -> RayJobTimedOut:
    return RayJobTimedOut(
        submission_id=submission_id, message=message, last_log_lines=last_log_lines, dashboard_url=dashboard_url
    )


def _rebuild_job_failed(submission_id, status, message, last_log_lines, dashboard_url) -> RayJobFailed:
    return RayJobFailed(
        submission_id=submission_id,
        status=status,
        message=message,
        last_log_lines=last_log_lines,
        dashboard_url=dashboard_url,
    )


HTTP_TIMEOUT_S = 30.0


def _refused(endpoint: RayEndpoint, status: int, body: str) -> BackendNotAvailable:
    why = "asked for a token and none was given" if status == 401 else "refused the token"
    return BackendNotAvailable(
        f"the Ray dashboard at {endpoint.dashboard_url} {why} (HTTP {status}: {body.strip()[:200]}); "
        "check the password of the rayops_ray connection, or the local head's auth_token"
    )


def _unreachable(endpoint: RayEndpoint, exc: BaseException) -> BackendNotAvailable:
    return BackendNotAvailable(f"cannot reach the Ray dashboard at {endpoint.dashboard_url}: {type(exc).__name__}: {exc}")


def check_response(
    endpoint: RayEndpoint, response: Any, *, api: str, error: type[BackendNotAvailable] = BackendNotAvailable
) -> None:
    """Raise for a dashboard answer that is not a success: a refused token names the connection to
    check; any other HTTP error names the API and carries the start of the body."""
    if response.status_code in (401, 403):
        raise _refused(endpoint, response.status_code, response.text)
    if response.status_code >= 400:
        raise error(f"the {api} at {endpoint.dashboard_url} answered HTTP {response.status_code}: {response.text.strip()[:1000]}")


class RayJobsClient:
    """Blocking client of one Ray cluster's Jobs API (requests)."""

    def __init__(self, endpoint: RayEndpoint, *, timeout_s: float = HTTP_TIMEOUT_S) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s

    def _request(self, method: str, path: str, *, body: Mapping[str, Any] | None = None, data: bytes | None = None) -> Any:
        import requests

        url = self.endpoint.dashboard_url.rstrip("/") + path
        try:
            return requests.request(method, url, headers=self.endpoint.headers(), json=body, data=data, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise _unreachable(self.endpoint, exc) from None

    def _check(self, response: Any) -> None:
        check_response(self.endpoint, response, api="Ray Jobs API")

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
        """Submit a job under `submission_id`; JobAlreadyExists if Ray has one by that id.

        POST /api/jobs/ as Ray's own client sends it. A local `working_dir` or `py_modules` entry
        is zipped and uploaded first (backends/code_package.py), as Ray's own client would.
        """
        request = {
            "entrypoint": entrypoint,
            "submission_id": submission_id,
            "runtime_env": dict(runtime_env) if runtime_env else None,
            "metadata": dict(metadata) if metadata else None,
            "entrypoint_num_cpus": entrypoint_num_cpus,
            "entrypoint_num_gpus": entrypoint_num_gpus,
            "entrypoint_memory": entrypoint_memory,
            "entrypoint_resources": dict(entrypoint_resources) if entrypoint_resources else None,
        }
        request = {key: value for key, value in request.items() if value is not None}
        if runtime_env and local_paths(runtime_env):
            request["runtime_env"] = self._upload_local_paths(runtime_env)
        r = self._request("POST", "/api/jobs/", body=request)
        if r.status_code >= 400 and "already exists" in r.text:
            raise JobAlreadyExists(submission_id)
        if r.status_code in (401, 403):
            raise _refused(self.endpoint, r.status_code, r.text)
        if r.status_code >= 400:
            raise BackendNotAvailable(
                f"Ray refused the job submission {submission_id} (HTTP {r.status_code}): {r.text.strip()[:500]}"
            )
        return str(r.json().get("submission_id") or submission_id)

    def package_exists(self, uri: str) -> bool:
        """Whether the cluster holds the code package `uri` (gcs://_ray_pkg_<hash>.zip).

        Ray pins a package it is asked about for a while, so one found here is still there
        when the job that names it starts."""
        r = self._request("GET", _package_path(uri))
        if r.status_code == 404:
            return False
        self._check(r)
        return True

    def upload_package(self, uri: str, data: bytes) -> None:
        """PUT a code package (a zip) under `uri`, as Ray's own client uploads one."""
        self._check(self._request("PUT", _package_path(uri), data=data))

    def _upload_local_paths(self, runtime_env: Mapping[str, Any]) -> dict[str, Any]:
        """`runtime_env` with its local working_dir and py_modules packed, uploaded and named by URI."""
        from pathlib import Path

        from airflow_provider_rayops.backends import code_package

        env = dict(runtime_env)
        excludes = list(env.pop("excludes", None) or [])

        def shipped(entry: str, *, working_dir: bool) -> str:
            if "://" in entry:
                return entry
            path = Path(entry).expanduser().absolute()
            try:
                if path.suffix in (".whl", ".zip") and path.is_file():
                    package = code_package.package_file(path, label=str(path))
                elif working_dir:
                    package = code_package.pack_working_dir(path, label=f"working_dir {path}", excludes=excludes)
                else:
                    package = code_package.pack_module(path, label=f"py_modules {path}", excludes=excludes)
            except code_package.CodeNotShippable as exc:
                raise CodeRefused(f"runtime_env {'working_dir' if working_dir else 'py_modules'} {entry!r}: {exc}") from None
            code_package.upload(self, package)
            return package.uri

        if isinstance(env.get("working_dir"), str):
            env["working_dir"] = shipped(env["working_dir"], working_dir=True)
        if env.get("py_modules"):
            env["py_modules"] = [shipped(str(m), working_dir=False) for m in env["py_modules"]]
        return env


def _package_path(uri: str) -> str:
    protocol, _, name = uri.partition("://")
    if not name or "/" in name:
        raise ValueError(f"{uri!r} is not a package URI such as gcs://_ray_pkg_<hash>.zip")
    return f"/api/packages/{protocol}/{name}"


def local_paths(runtime_env: Mapping[str, Any] | None) -> list[str]:
    """The folders or files of a runtime_env that live on this machine and must be uploaded
    (a `working_dir` or `py_modules` entry without a URI scheme)."""
    if not runtime_env:
        return []
    entries = [runtime_env.get("working_dir"), *(runtime_env.get("py_modules") or [])]
    return [str(entry) for entry in entries if isinstance(entry, str) and entry and "://" not in entry]


class AsyncRayJobsClient:
    """Async client of one Ray cluster's Jobs API, for triggers (aiohttp; no blocking calls).

    Use as `async with AsyncRayJobsClient(endpoint) as client: ...`.
    """

    def __init__(self, endpoint: RayEndpoint, *, timeout_s: float = HTTP_TIMEOUT_S) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._session: aiohttp.ClientSession | None = None

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
