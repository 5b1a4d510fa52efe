"""RayJobTrigger: follows one Ray job from the triggerer until it ends, logging its output.

It holds no secret: its kwargs (stored in Airflow's database) are the submission id, the
compute profile and its bounds, and it resolves the dashboard address and token itself,
without blocking the event loop (the connection through `aget_connection`, the local head's
files in a thread). HTTP goes through aiohttp; the job's log arrives through the dashboard's
websocket tail, so only new text crosses the wire. It yields exactly one event, whose payload
is everything `SubmitRayJobOperator.execute_complete` needs (`dag.test()` passes only the event):

    {"submission_id": str, "status": "SUCCEEDED" | "FAILED" | "STOPPED" | "ERROR" | "TIMEOUT",
     "dashboard_url": str, "message": str, "result": dict | None, "last_log_lines": [str]}

ERROR means the job could not be followed (head gone or unreachable for longer than
`unreachable_timeout`, token refused, job unknown). TIMEOUT means `deadline` (the task's
execution_timeout) passed first: the trigger stopped the job. Airflow 3.3 does not apply
execution_timeout to a deferred task, so this bound is the trigger's own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_rayops.backends import get_backend
from airflow_provider_rayops.hooks.ray import RayHook
from airflow_provider_rayops.hooks.ray_jobs_api import AsyncRayJobsClient, JobStatus, RayEndpoint, RayopsComputeError
from airflow_provider_rayops.triggers.job_outcome import JobOutcome, LogFollower

# How long the dashboard may stay unreachable before the trigger gives up on the job.
UNREACHABLE_TIMEOUT_S = 60.0
# Ray's log stream lags the job by 1-3 s (the dashboard's tail reads the file once a second, through
# the agent), which every stage used to wait out after its job had ended: 3.2-3.5 s from a job's
# end to its outcome, measured. So once the job has ended, a log of which the stream delivered less
# than WHOLE_LOG_READ_MAX_CHARS is read once whole at once (one request, faster than the stream and
# exact: what the stream had not delivered, a later result line included). A longer log waits up
# to LOG_DRAIN_TIMEOUT_S for the stream, and is read whole only if the stream did not finish,
# delivered nothing, or the job failed (a failure's last lines are its error message). The limit
# is on what the stream delivered: a stream far behind can still mean a larger read, once.
LOG_DRAIN_TIMEOUT_S = 5.0
WHOLE_LOG_READ_MAX_CHARS = 4 << 20
# Once the result line has arrived the job is about to end (rayops jobs print it last): its status
# is polled this often, for at most RESULT_FAST_POLL_S (a job may go on after a result line; the
# last one wins), then every poll_interval again.
RESULT_POLL_INTERVAL_S = 0.1
RESULT_FAST_POLL_S = 10.0


class Outage:
    """How long a service has failed to answer in a row: `failed` raises once that passes `limit_s`."""

    def __init__(self, what: str, limit_s: float) -> None:
        self.what = what
        self.limit_s = limit_s
        self._since: float | None = None

    def failed(self, exc: Exception) -> None:
        now = time.monotonic()
        self._since = self._since or now
        if now - self._since >= self.limit_s:
            raise RayopsComputeError(
                f"{self.what} did not answer for {now - self._since:.0f}s (limit {self.limit_s:.0f}s): {exc}"
            ) from None

    def answered(self) -> None:
        self._since = None


class JobLog(Protocol):
    """Where the job's log lines go: a stdlib `logging.Logger` or an Airflow task's or trigger's
    structlog-style `self.log` (only positional %-style arguments are used, which both take)."""

    def debug(self, msg: Any, /, *args: Any) -> Any: ...
    def info(self, msg: Any, /, *args: Any) -> Any: ...
    def warning(self, msg: Any, /, *args: Any) -> Any: ...
    def error(self, msg: Any, /, *args: Any) -> Any: ...


class RayJobTrigger(BaseTrigger):
    """Polls a Ray job's status every `poll_interval` seconds while streaming its log; fires once at the end.

    :param ray_conn_id: the `rayops_ray` connection of the cluster (default `rayops_ray_default`),
        unless `compute` names where the job runs (a profile dict, e.g. `{"backend": "local"}`).
    :param deadline: Unix time after which the job is stopped and the event is TIMEOUT (None: no limit).
    :param unreachable_timeout: seconds the dashboard may fail to answer before the event is ERROR.
    """

    def __init__(
        self,
        *,
        submission_id: str,
        ray_conn_id: str | None = None,
        compute: dict[str, Any] | None = None,
        poll_interval: float = 1.0,
        unreachable_timeout: float = UNREACHABLE_TIMEOUT_S,
        deadline: float | None = None,
    ) -> None:
        super().__init__()
        self.submission_id = submission_id
        if ray_conn_id is not None and compute:
            raise ValueError("give either ray_conn_id (a Ray cluster by connection) or compute (a profile), not both")
        # As the operator: a cluster by connection unless a compute profile says otherwise.
        self.compute = dict(compute) if compute else {"backend": "ray", "conn_id": ray_conn_id or RayHook.default_conn_name}
        self.poll_interval = float(poll_interval)
        self.unreachable_timeout = float(unreachable_timeout)
        self.deadline = float(deadline) if deadline is not None else None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "submission_id": self.submission_id,
                "compute": self.compute,
                "poll_interval": self.poll_interval,
                "unreachable_timeout": self.unreachable_timeout,
                "deadline": self.deadline,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        outcome = await self.follow()
        yield TriggerEvent(outcome.to_event())

    async def follow(self, log: JobLog | None = None) -> JobOutcome:
        """Follow the job to its end, job log lines to `log` (default: the trigger's); never raises
        for a job or cluster problem (those end as ERROR)."""
        log = log or self.log
        dashboard_url = ""
        try:
            endpoint = await self._endpoint()
            dashboard_url = endpoint.dashboard_url
            log.info("Following Ray job %s at %s", self.submission_id, endpoint.job_url(self.submission_id))
            # Each request waits at most as long as the dashboard may be unreachable in all.
            async with AsyncRayJobsClient(endpoint, timeout_s=min(30.0, self.unreachable_timeout)) as client:
                return await self._follow(client, dashboard_url, log)
        except RayopsComputeError as exc:
            log.error("Lost Ray job %s: %s", self.submission_id, exc)
            return JobOutcome.error(submission_id=self.submission_id, dashboard_url=dashboard_url, message=str(exc))

    async def _follow(self, client: AsyncRayJobsClient, dashboard_url: str, log: JobLog) -> JobOutcome:
        follower = LogFollower()
        result_seen = asyncio.Event()
        tail = asyncio.create_task(self._tail(client, follower, log, result_seen))
        outage = Outage("the Ray dashboard", self.unreachable_timeout)
        fast_until: float | None = None
        try:
            while True:
                if self.deadline is not None and time.time() >= self.deadline:
                    return await self._time_out(client, dashboard_url, follower, log)
                try:
                    info = await client.get_job(self.submission_id)
                except RayopsComputeError as exc:
                    outage.failed(exc)  # raises once the dashboard has not answered for unreachable_timeout
                    log.warning("Ray dashboard not answering (%s); retrying", exc)
                    await asyncio.sleep(self.poll_interval)
                    continue
                outage.answered()
                if info is None:
                    return JobOutcome.error(
                        submission_id=self.submission_id,
                        dashboard_url=dashboard_url,
                        message=f"the Ray cluster at {dashboard_url} has no job {self.submission_id} (was the head restarted?)",
                    )
                if info.status.is_terminal():
                    await self._drain(tail, client, follower, log, succeeded=info.status is JobStatus.SUCCEEDED)
                    log.info("Ray job %s ended %s", self.submission_id, info.status.value)
                    return JobOutcome.of_job(info, follower, dashboard_url=dashboard_url)
                if fast_until is None and result_seen.is_set():
                    fast_until = time.monotonic() + RESULT_FAST_POLL_S
                if fast_until is not None:
                    await asyncio.sleep(RESULT_POLL_INTERVAL_S if time.monotonic() < fast_until else self.poll_interval)
                else:
                    # Woken early when the result line arrives: the job is about to end.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(result_seen.wait(), timeout=self.poll_interval)
        finally:
            await _stop(tail)

    async def _tail(self, client: AsyncRayJobsClient, follower: LogFollower, log: JobLog, result_seen: asyncio.Event) -> None:
        """Log each line as the job writes it, setting `result_seen` once the result line has come;
        reconnect (skipping what was seen) if the stream drops before the job has ended."""
        while True:
            try:
                async for chunk in client.tail_logs(self.submission_id):
                    for line in follower.feed(chunk):
                        log.info("%s", line)
                    if follower.result is not None:
                        result_seen.set()
                info = await client.get_job(self.submission_id)
                if info is None or info.status.is_terminal():
                    return
            except RayopsComputeError as exc:
                log.debug("Log stream of Ray job %s dropped (%s); reconnecting", self.submission_id, exc)
            await asyncio.sleep(self.poll_interval)
            follower.restart()

    async def _drain(
        self, tail: asyncio.Task, client: AsyncRayJobsClient, follower: LogFollower, log: JobLog, *, succeeded: bool
    ) -> None:
        """Hand out the job's last lines, which Ray's stream delivers late (see LOG_DRAIN_TIMEOUT_S).
        The whole-log read is the only one a followed job gets; polls never fetch the log."""
        short = follower.consumed < WHOLE_LOG_READ_MAX_CHARS
        if not short:
            with contextlib.suppress(TimeoutError, RayopsComputeError):
                await asyncio.wait_for(asyncio.shield(tail), timeout=LOG_DRAIN_TIMEOUT_S)
        read_whole = short or not tail.done() or follower.consumed == 0 or not succeeded
        # The stream stops before the read, so no line is handed out twice.
        await _stop(tail)
        if read_whole:
            with contextlib.suppress(RayopsComputeError):
                for line in follower.catch_up(await client.get_logs(self.submission_id)):
                    log.info("%s", line)
        for line in follower.finish():
            log.info("%s", line)

    async def _time_out(self, client: AsyncRayJobsClient, dashboard_url: str, follower: LogFollower, log: JobLog) -> JobOutcome:
        try:
            stopped = await client.stop(self.submission_id)
            what = "the Ray job was stopped" if stopped else "the Ray job had just ended"
        except RayopsComputeError as exc:
            what = f"stopping the Ray job failed ({exc}); stop it from the dashboard"
        log.error("Ray job %s exceeded the task's time limit; %s", self.submission_id, what)
        return JobOutcome.timed_out(
            submission_id=self.submission_id,
            dashboard_url=dashboard_url,
            message=f"the task's execution_timeout ran out while the job still ran; {what}",
            log=follower,
        )

    async def on_kill(self) -> None:
        """The user killed the deferred task (mark failed / success, clear): stop the Ray job too.

        Best effort: the task is being killed either way, so a cluster that does not answer is logged."""
        try:
            async with AsyncRayJobsClient(await self._endpoint()) as client:
                stopped = await client.stop(self.submission_id)
        except RayopsComputeError as exc:
            self.log.warning("Could not stop Ray job %s (%s); stop it from the dashboard", self.submission_id, exc)
            return
        self.log.info("Ray job %s %s", self.submission_id, "stopped" if stopped else "had already ended")

    async def _endpoint(self) -> RayEndpoint:
        return await get_backend(self.compute).aendpoint()


async def _stop(task: asyncio.Task) -> None:
    """Cancel `task` and wait for it to end, whatever it raises; a cancellation of the caller itself
    still propagates."""
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise
    except Exception:
        pass  # the stream's own failure no longer matters once it is stopped
