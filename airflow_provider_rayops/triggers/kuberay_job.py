"""KubeRayJobTrigger: follows one RayJob from the triggerer until KubeRay says it ended.

It polls the RayJob (through the cncf-kubernetes provider's async hook) for
`status.jobDeploymentStatus` (terminal: Complete, Failed), `status.jobStatus` and the reason of a
failure, and, once KubeRay reports the cluster's dashboard and the job exists there, streams the
job's log from that dashboard exactly as `RayJobTrigger` does for a cluster it was given (the
result line comes through the log). Its event has RayJobTrigger's shape, so
`SubmitRayJobOperator.execute_complete` reads both alike; the status is the outcome of
`backends.kuberay.status.OUTCOMES` for the RayJob's reason.

Its kwargs hold no secret: the RayJob's name, the Ray job id, the compute profile and bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from airflow_provider_rayops.backends import parse_profile
from airflow_provider_rayops.backends.kuberay import KubeRayBackend
from airflow_provider_rayops.backends.kuberay.manifests import RAYJOBS
from airflow_provider_rayops.backends.kuberay.status import RayJobState
from airflow_provider_rayops.hooks.ray_jobs_api import AsyncRayJobsClient, JobStatus, RayopsComputeError
from airflow_provider_rayops.triggers.job_outcome import ERROR_STATUS, JobOutcome, LogFollower
from airflow_provider_rayops.triggers.ray_job import (
    RESULT_FAST_POLL_S,
    RESULT_POLL_INTERVAL_S,
    UNREACHABLE_TIMEOUT_S,
    JobLog,
    Outage,
    RayJobTrigger,
    _stop,
)


class KubeRayJobTrigger(RayJobTrigger):
    """Polls RayJob `name` every `poll_interval` seconds, streaming its Ray job's log; fires once at the end.

    :param name: the RayJob, in the profile's namespace.
    :param submission_id: the Ray job id KubeRay submits it under (spec.jobId).
    :param compute: the kuberay compute profile (a plain dict).
    :param deadline: Unix time after which the trigger deletes the RayJob itself, if KubeRay has not
        ended it by its activeDeadlineSeconds (None: no limit).
    :param task_deadline: the RayJob's activeDeadlineSeconds is the task's execution_timeout, so
        KubeRay's DeadlineExceeded is the task's timeout (TIMEOUT), not a failure of the job.
    """

    def __init__(
        self,
        *,
        name: str,
        submission_id: str,
        compute: dict[str, Any],
        poll_interval: float = 1.0,
        unreachable_timeout: float = UNREACHABLE_TIMEOUT_S,
        deadline: float | None = None,
        task_deadline: bool = False,
    ) -> None:
        super().__init__(
            submission_id=submission_id,
            compute=compute,
            poll_interval=poll_interval,
            unreachable_timeout=unreachable_timeout,
            deadline=deadline,
        )
        self.name = name
        self.task_deadline = bool(task_deadline)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        path, kwargs = super().serialize()
        return path, {**kwargs, "name": self.name, "task_deadline": self.task_deadline}

    def _backend(self) -> KubeRayBackend:
        return KubeRayBackend(parse_profile(self.compute))

    async def follow(self, log: JobLog | None = None) -> JobOutcome:
        """Follow the RayJob to its end, job log lines to `log` (default: the trigger's); never raises
        for a job or cluster problem (those end as ERROR)."""
        log = log or self.log
        backend = self._backend()
        where = f"{backend.profile.namespace}/{self.name}"
        try:
            async with backend.async_client() as kube:
                log.info("Following RayJob %s (Ray job %s)", where, self.submission_id)
                return await self._follow_ray_job(kube, backend, log)
        except RayopsComputeError as exc:
            log.error("Lost RayJob %s: %s", where, exc)
            return JobOutcome.error(submission_id=self.submission_id, dashboard_url="", message=str(exc))

    async def _follow_ray_job(self, kube: Any, backend: KubeRayBackend, log: JobLog) -> JobOutcome:
        follower = LogFollower()
        result_seen = asyncio.Event()
        dashboard: AsyncRayJobsClient | None = None
        dashboard_url = ""
        tail: asyncio.Task | None = None
        outage = Outage("the Kubernetes API", self.unreachable_timeout)
        fast_until: float | None = None
        seen: tuple[str, str] = ("", "")
        try:
            while True:
                if self.deadline is not None and time.time() >= self.deadline:
                    return await self._delete_at_deadline(kube, dashboard_url, follower, log)
                try:
                    found = await kube.get(RAYJOBS, self.name)
                except RayopsComputeError as exc:
                    outage.failed(exc)  # raises once the API has not answered for unreachable_timeout
                    log.warning("Kubernetes API not answering (%s); retrying", exc)
                    await asyncio.sleep(self.poll_interval)
                    continue
                outage.answered()
                if found is None:
                    return JobOutcome.error(
                        submission_id=self.submission_id,
                        dashboard_url=dashboard_url,
                        message=f"RayJob {backend.profile.namespace}/{self.name} was deleted before its job ended",
                    )
                state = RayJobState.of(found)
                if (state.deployment_status, state.job_status) != seen:
                    seen = (state.deployment_status, state.job_status)
                    log.info(
                        "RayJob %s: %s%s", self.name, state.deployment_status or "New",
                        f", Ray job {state.job_status}" if state.job_status else "",
                    )  # fmt: skip
                if dashboard is not None and state.dashboard != dashboard_url:
                    # KubeRay retried the job on a new cluster (backoff_limit): follow that one's log from its start.
                    log.info("RayJob %s moved to another Ray cluster (%s)", self.name, state.dashboard or "starting")
                    if tail is not None:
                        await _stop(tail)
                    await dashboard.__aexit__(None, None, None)
                    dashboard, tail, dashboard_url = None, None, ""
                    follower, result_seen, fast_until = LogFollower(), asyncio.Event(), None
                if dashboard is None and state.dashboard and state.job_status:
                    dashboard_url = state.dashboard
                    dashboard = AsyncRayJobsClient(
                        backend.cluster_endpoint(dashboard_url), timeout_s=min(30.0, self.unreachable_timeout)
                    )
                    await dashboard.__aenter__()
                    tail = asyncio.create_task(self._tail(dashboard, follower, log, result_seen))
                if state.terminal:
                    return await self._end(kube, backend, state, dashboard, tail, follower, dashboard_url, log)
                if fast_until is None and result_seen.is_set():
                    fast_until = time.monotonic() + RESULT_FAST_POLL_S
                if fast_until is not None and time.monotonic() < fast_until:
                    await asyncio.sleep(min(self.poll_interval, RESULT_POLL_INTERVAL_S * 2))  # the job is about to end
                else:
                    with contextlib.suppress(TimeoutError):
                        # Woken early when the result line arrives: the job is about to end.
                        await asyncio.wait_for(result_seen.wait(), timeout=self.poll_interval)
        finally:
            if tail is not None:
                await _stop(tail)
            if dashboard is not None:
                await dashboard.__aexit__(None, None, None)

    async def _end(
        self,
        kube: Any,
        backend: KubeRayBackend,
        state: RayJobState,
        dashboard: AsyncRayJobsClient | None,
        tail: asyncio.Task | None,
        follower: LogFollower,
        dashboard_url: str,
        log: JobLog,
    ) -> JobOutcome:
        status, message = state.outcome(deadline_was_the_tasks=self.task_deadline)
        succeeded = status == JobStatus.SUCCEEDED.value
        if dashboard is not None and tail is not None:
            await self._drain(tail, dashboard, follower, log, succeeded=succeeded)
        log.info("RayJob %s ended %s (%s)", self.name, state.deployment_status, status)
        if state.deployment_status == "Failed" and state.job_running:
            # KubeRay ends a RayJob at a deadline (or when it gives up on it) without stopping its job:
            # left alone, the job would hold its GPUs until the clean-up deletes the cluster.
            message += "; " + await self._stop_left_running(kube, dashboard, state, log)
        elif status == "STOPPED" or backend.profile.cluster is not None:
            # No deletion rule matches a stopped job, and KubeRay cleans up nothing on a selected cluster.
            message = (message + "; " if message else "") + await self._delete(kube, log)
        if succeeded and follower.result is None:
            problem = await self._unreadable_log(dashboard, state)
            if problem:
                # The result of a rayops job travels in its log: a success without it is not a success to report.
                return JobOutcome.error(submission_id=self.submission_id, dashboard_url=dashboard_url, message=problem)
        if status == ERROR_STATUS:
            return JobOutcome.error(submission_id=self.submission_id, dashboard_url=dashboard_url, message=message)
        return JobOutcome(
            submission_id=self.submission_id,
            status=status,
            dashboard_url=dashboard_url,
            message=message,
            result=(follower.result or {}) if succeeded else None,
            last_log_lines=() if succeeded else tuple(follower.last_lines),
        )

    async def _unreadable_log(self, dashboard: AsyncRayJobsClient | None, state: RayJobState) -> str | None:
        """Why the log of a succeeded job cannot be read (None: it can; the job reported no result)."""
        reach = (
            "Airflow's workers and triggerer must reach the head Service on port 8265 with the token of the "
            "profile's token_secret ($RAYOPS_KUBERAY_TOKEN), before the clean-up deletes the cluster"
        )
        if dashboard is None:
            seen = state.dashboard_url or "none reported"
            return f"RayJob {self.name} succeeded, but its Ray cluster's dashboard ({seen}) was never reached: {reach}"
        try:
            await dashboard.get_logs(self.submission_id)
        except RayopsComputeError as exc:
            return f"RayJob {self.name} succeeded, but its log (and result) could not be read: {exc}; {reach}"
        return None

    async def _stop_left_running(self, kube: Any, dashboard: AsyncRayJobsClient | None, state: RayJobState, log: JobLog) -> str:
        """Stop what a failed RayJob left running: its Ray job through the dashboard; pods still pending
        for nodes (a pre-running deadline) by deleting the RayJob. The cluster itself is left to the
        clean-up rules (`cleanup.failed_after_s`), for a look at what went wrong."""
        if dashboard is not None and state.job_status:
            try:
                stopped = await dashboard.stop(self.submission_id)
                log.warning("RayJob %s failed while its Ray job still ran: the job was stopped", self.name)
                return "its Ray job was stopped" if stopped else "its Ray job had just ended"
            except RayopsComputeError as exc:
                log.warning("could not stop Ray job %s (%s); deleting its RayJob", self.submission_id, exc)
                return await self._delete(kube, log)
        if state.reason == "PreRunningDeadlineExceeded":
            # Pods pending for nodes that never come would keep asking the node autoscaler for them.
            return await self._delete(kube, log)
        return "its cluster is left to the clean-up rules"

    async def _delete(self, kube: Any, log: JobLog) -> str:
        try:
            deleted = await kube.delete(RAYJOBS, self.name)
        except RayopsComputeError as exc:
            return f"deleting RayJob {self.name} failed ({exc}); delete it with kubectl"
        log.info("RayJob %s %s", self.name, "deleted" if deleted else "was already gone")
        return f"RayJob {self.name} was deleted with its cluster" if deleted else f"RayJob {self.name} was already gone"

    async def _delete_at_deadline(self, kube: Any, dashboard_url: str, follower: LogFollower, log: JobLog) -> JobOutcome:
        what = await self._delete(kube, log)
        log.error("RayJob %s exceeded the task's time limit; %s", self.name, what)
        return JobOutcome.timed_out(
            submission_id=self.submission_id,
            dashboard_url=dashboard_url,
            message=f"the task's execution_timeout ran out while the job still ran; {what}",
            log=follower,
        )

    async def on_kill(self) -> None:
        """The user killed the deferred task: delete the RayJob, and with it the cluster KubeRay made.

        Best effort: the task is being killed either way, so an API that does not answer is logged."""
        try:
            async with self._backend().async_client() as kube:
                deleted = await kube.delete(RAYJOBS, self.name)
        except RayopsComputeError as exc:
            self.log.warning("Could not delete RayJob %s (%s); delete it with kubectl", self.name, exc)
            return
        self.log.info("RayJob %s %s", self.name, "deleted" if deleted else "was already gone")
