"""How a followed Ray job ended: its log lines handed out once (`LogFollower`), and the outcome
(`JobOutcome`) that the operator returns or raises from and the trigger sends as its event.

No Airflow here.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Mapping
from typing import Any

from airflow_provider_rayops.hooks.ray_jobs_api import (
    BackendNotAvailable,
    JobInfo,
    JobRefused,
    JobStatus,
    RayJobFailed,
    RayJobTimedOut,
)
from airflow_provider_rayops.jobs.runtime import RESULT_MARKER, parse_result

# How many of a failed job's last log lines travel in the error (and the trigger event).
FAILURE_LOG_LINES = 30
# Lines longer than this are cut in the failure message and event payload (they live in the DB).
MAX_LINE_CHARS = 2000
# The outcome status when a job could not be followed to its end (not a Ray status).
ERROR_STATUS = "ERROR"
# The outcome status when the task's time limit ran out and the job was stopped.
TIMEOUT_STATUS = "TIMEOUT"
# The outcome status when the platform refused the job as configured (KubeRay's ValidationFailed).
REFUSED_STATUS = "REFUSED"
# A line still without its newline is handed out once it grows past this (bounded memory).
MAX_PARTIAL_LINE_CHARS = 1 << 20


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
        self._skip = 0  # a stream restarted and stopped before it replayed what was seen: sliced here instead
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
        if self.status == REFUSED_STATUS:
            raise JobRefused(f"Ray job {self.submission_id} was refused: {self.message}")
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
