"""The compute plane's interface: where a Ray job runs, what state it is in, how it failed.

Every backend ends at a Ray dashboard that speaks the Jobs REST API; a backend's job is to
say which one (`endpoint()`) and, for the embedded head, to make it exist. The operator and
the trigger talk to that endpoint through `backends.jobs_api`.

This module imports no Airflow (job code and tooling use it) and no Ray.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from airflow_provider_rayops.config.compute import ComputeProfile

# How many of a failed job's last log lines travel in the error (and the trigger event).
FAILURE_LOG_LINES = 30


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
    return RayJobTimedOut(submission_id=submission_id, message=message, last_log_lines=last_log_lines, dashboard_url=dashboard_url)


def _rebuild_job_failed(submission_id, status, message, last_log_lines, dashboard_url) -> RayJobFailed:
    return RayJobFailed(
        submission_id=submission_id,
        status=status,
        message=message,
        last_log_lines=last_log_lines,
        dashboard_url=dashboard_url,
    )


class ComputeBackend(abc.ABC):
    """Where a pipeline's Ray jobs run. Built from a compute profile by `backends.get_backend`."""

    kind: ClassVar[str]

    @property
    @abc.abstractmethod
    def profile(self) -> ComputeProfile:
        """The profile this backend was built from, with defaults resolved (safe to hand to a trigger)."""

    @abc.abstractmethod
    def endpoint(self) -> RayEndpoint:
        """The dashboard to submit to, ready to take jobs (the local backend starts its head if needed)."""

    @abc.abstractmethod
    async def aendpoint(self) -> RayEndpoint:
        """The same endpoint from async code: no blocking I/O in the event loop, and nothing is started."""

    def profile_dict(self) -> dict[str, Any]:
        """The resolved profile as a plain dict (no secrets: connections are referenced by id).
        Defaults are left out: they come back when the dict is parsed again (trigger kwargs stay small)."""
        return self.profile.model_dump(mode="json", exclude_none=True, exclude_defaults=True) | {"backend": self.profile.backend}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.profile_dict()!r})"
