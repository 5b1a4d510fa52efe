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
from airflow_provider_rayops.triggers.ray_job import UNREACHABLE_TIMEOUT_S, JobLog, Outage, RayJobTrigger, _stop


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
                if dashboard is None and state.dashboard and state.job_status:
                    dashboard_url = state.dashboard
                    dashboard = AsyncRayJobsClient(
                        backend.cluster_endpoint(dashboard_url), timeout_s=min(30.0, self.unreachable_timeout)
                    )
                    await dashboard.__aenter__()
                    tail = asyncio.create_task(self._tail(dashboard, follower, log, result_seen))
                if state.terminal:
                    return await self._end(state, dashboard, tail, follower, dashboard_url, log)
                with contextlib.suppress(TimeoutError):
                    # Woken early when the result line arrives: the job is about to end.
                    await asyncio.wait_for(result_seen.wait(), timeout=self.poll_interval)
                if result_seen.is_set():
                    await asyncio.sleep(min(self.poll_interval, 0.2))
        finally:
            if tail is not None:
                await _stop(tail)
            if dashboard is not None:
                await dashboard.__aexit__(None, None, None)

    async def _end(
        self,
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
        if succeeded and dashboard is None:
            # The result of a rayops job travels in its log, which lives on the cluster's dashboard.
            return JobOutcome.error(
                submission_id=self.submission_id,
                dashboard_url="",
                message=f"RayJob {self.name} succeeded, but its Ray cluster's dashboard ({state.dashboard_url or 'none reported'}) "
                "was never reachable from here, so its log and result could not be read: Airflow's workers and "
                "triggerer must reach the head Service on port 8265",
            )
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

    async def _delete_at_deadline(self, kube: Any, dashboard_url: str, follower: LogFollower, log: JobLog) -> JobOutcome:
        try:
            deleted = await kube.delete(RAYJOBS, self.name)
            what = "the RayJob was deleted" if deleted else "the RayJob was already gone"
        except RayopsComputeError as exc:
            what = f"deleting the RayJob failed ({exc}); delete it with kubectl"
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
