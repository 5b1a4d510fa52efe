"""RayJobTrigger: follows one Ray job from the triggerer until it ends, logging its output.

It holds no secret: its kwargs (stored in Airflow's database) are the submission id and the
compute profile, and it resolves the dashboard address and token itself, without blocking
the event loop (the connection through `aget_connection`, the local head's files in a thread).
HTTP goes through aiohttp. It yields exactly one event, whose payload is everything
`SubmitRayJobOperator.execute_complete` needs (`dag.test()` passes only the event):

    {"submission_id": str, "status": "SUCCEEDED" | "FAILED" | "STOPPED" | "ERROR",
     "dashboard_url": str, "message": str, "result": dict | None, "last_log_lines": [str]}

ERROR means the job could not be followed (head gone, token refused, job unknown).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_rayops.backends import get_backend
from airflow_provider_rayops.backends.base import RayEndpoint, RayopsComputeError
from airflow_provider_rayops.backends.jobs_api import AsyncRayJobsClient, JobOutcome, LogFollower

# How long the dashboard may stay unreachable before the trigger gives up on the job.
UNREACHABLE_TIMEOUT_S = 60.0


class RayJobTrigger(BaseTrigger):
    """Polls a Ray job every `poll_interval` seconds; logs new job log lines; fires once at the end."""

    def __init__(
        self,
        *,
        submission_id: str,
        compute: dict[str, Any] | None = None,
        poll_interval: float = 2.0,
        unreachable_timeout: float = UNREACHABLE_TIMEOUT_S,
    ) -> None:
        super().__init__()
        self.submission_id = submission_id
        self.compute = dict(compute) if compute else {"backend": "local"}
        self.poll_interval = float(poll_interval)
        self.unreachable_timeout = float(unreachable_timeout)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "submission_id": self.submission_id,
                "compute": self.compute,
                "poll_interval": self.poll_interval,
                "unreachable_timeout": self.unreachable_timeout,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        outcome = await self.follow()
        yield TriggerEvent(outcome.to_event())

    async def follow(self) -> JobOutcome:
        """Follow the job to its end; never raises for a job or cluster problem (those become ERROR)."""
        dashboard_url = ""
        try:
            endpoint = await self._endpoint()
            dashboard_url = endpoint.dashboard_url
            self.log.info("Following Ray job %s at %s", self.submission_id, endpoint.job_url(self.submission_id))
            async with AsyncRayJobsClient(endpoint) as client:
                return await self._poll(client, dashboard_url)
        except RayopsComputeError as exc:
            self.log.error("Lost Ray job %s: %s", self.submission_id, exc)
            return JobOutcome.error(submission_id=self.submission_id, dashboard_url=dashboard_url, message=str(exc))

    async def _poll(self, client: AsyncRayJobsClient, dashboard_url: str) -> JobOutcome:
        follower = LogFollower()
        failing_since: float | None = None
        while True:
            try:
                info = await client.get_job(self.submission_id)
                if info is None:
                    return JobOutcome.error(
                        submission_id=self.submission_id,
                        dashboard_url=dashboard_url,
                        message=f"the Ray cluster at {dashboard_url} has no job {self.submission_id} "
                        "(was the head restarted?)",
                    )
                terminal = info.status.is_terminal()
                logs = await client.get_logs(self.submission_id)
            except RayopsComputeError as exc:
                now = time.monotonic()
                failing_since = failing_since or now
                if now - failing_since > self.unreachable_timeout:
                    raise
                self.log.warning("Ray dashboard not answering (%s); retrying", exc)
                await asyncio.sleep(self.poll_interval)
                continue
            failing_since = None
            for line in follower.new_lines(logs, final=terminal):
                self.log.info("%s", line)
            if terminal:
                self.log.info("Ray job %s ended %s", self.submission_id, info.status.value)
                return JobOutcome.of_job(info, logs, dashboard_url=dashboard_url)
            await asyncio.sleep(self.poll_interval)

    async def on_kill(self) -> None:
        """The user killed the deferred task (mark failed / success, clear): stop the Ray job too."""
        endpoint = await self._endpoint()
        async with AsyncRayJobsClient(endpoint) as client:
            stopped = await client.stop(self.submission_id)
        self.log.info("Ray job %s %s", self.submission_id, "stopped" if stopped else "had already ended")

    async def _endpoint(self) -> RayEndpoint:
        return await get_backend(self.compute).aendpoint()
