"""What a RayJob's status says, in the terms of a task: running, done, or why not.

KubeRay 1.7 sets `status.jobDeploymentStatus` (terminal: Complete, Failed), `status.jobStatus`
(the Ray job's own PENDING ... SUCCEEDED), and on failure `status.reason` and `status.message`.
Every reason maps to one task outcome (`OUTCOMES`): a failure the next try may not meet again
(FAILED, retried as the task's retries say), one it will meet again (REFUSED: the task fails
without a retry), a time limit (TIMEOUT), or KubeRay losing track of the job (ERROR).
No Airflow here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from airflow_provider_rayops.hooks.ray_jobs_api import JobInfo, JobStatus
from airflow_provider_rayops.triggers.job_outcome import ERROR_STATUS, REFUSED_STATUS, TIMEOUT_STATUS

# jobDeploymentStatus values after which KubeRay moves the RayJob no further: Complete and Failed,
# and ValidationFailed (KubeRay refused the spec; it stays so until the spec changes).
TERMINAL = ("Complete", "Failed", "ValidationFailed")

# status.reason -> (outcome status, what it means for the user). ERROR and TIMEOUT are the
# outcome statuses of job_outcome.JobOutcome; FAILED is the Ray job status.
OUTCOMES: dict[str, tuple[str, str]] = {
    "AppFailed": ("FAILED", "the Ray job failed"),
    "SubmissionFailed": (
        "FAILED",
        "KubeRay could not submit the job to its Ray cluster (the submitter failed: look at the RayJob's events "
        "and the head pod's log)",
    ),
    "DeadlineExceeded": ("FAILED", "the RayJob ran past the profile's active_deadline_s (activeDeadlineSeconds)"),
    "PreRunningDeadlineExceeded": (
        "FAILED",
        "the job did not start running within preRunningDeadlineSeconds: its Ray cluster's pods did not all "
        "start (no node fits the GPU request or node selector, quota, or the image could not be pulled)",
    ),
    "ValidationFailed": (REFUSED_STATUS, "KubeRay refused the RayJob"),
    "JobDeploymentStatusTransitionGracePeriodExceeded": (
        ERROR_STATUS,
        "KubeRay gave up on the RayJob: it stayed in a transition state past its grace period",
    ),
    "JobStatusCheckTimeoutExceeded": (
        ERROR_STATUS,
        "KubeRay could not read the job's status from its Ray cluster's dashboard for too long",
    ),
}


@dataclasses.dataclass(frozen=True)
class RayJobState:
    """The parts of a RayJob object that say where its job is."""

    name: str
    deployment_status: str = ""
    job_status: str = ""
    reason: str = ""
    message: str = ""
    dashboard_url: str = ""
    job_id: str = ""
    cluster_name: str = ""
    deleting: bool = False  # a deletionTimestamp: KubeRay's finalizer is stopping it, it is going away
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)  # the Ray job's (spec.metadata)

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> RayJobState:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        return cls(
            name=str(meta.get("name") or ""),
            deployment_status=str(status.get("jobDeploymentStatus") or ""),
            job_status=str(status.get("jobStatus") or ""),
            reason=str(status.get("reason") or ""),
            message=str(status.get("message") or ""),
            dashboard_url=str(status.get("dashboardURL") or ""),
            job_id=str(status.get("jobId") or spec.get("jobId") or ""),
            cluster_name=str(status.get("rayClusterName") or ""),
            deleting=bool(meta.get("deletionTimestamp")),
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
            metadata=dict(spec.get("metadata") or {}),
        )

    @property
    def terminal(self) -> bool:
        return self.deployment_status in TERMINAL

    @property
    def dashboard(self) -> str | None:
        """The cluster's dashboard as a URL (KubeRay records host:port, reachable from inside the cluster)."""
        if not self.dashboard_url:
            return None
        return self.dashboard_url if "://" in self.dashboard_url else f"http://{self.dashboard_url}"

    @property
    def job_running(self) -> bool:
        """Whether the Ray job itself may still run: KubeRay ends a RayJob at a deadline, or when it
        gives up on it, without stopping its job (only deleting the RayJob does)."""
        return self.job_status in ("", "PENDING", "RUNNING")

    def job_info(self) -> JobInfo:
        """The job as the Jobs API would describe it: what the operator's re-attach rules read.
        A RayJob being deleted, refused or failed is never one to re-attach to (FAILED)."""
        if self.deployment_status == "Complete" and not self.deleting:
            status = JobStatus(self.job_status) if self.job_status in JobStatus.__members__ else JobStatus.SUCCEEDED
        elif self.deployment_status in ("Failed", "ValidationFailed") or self.deleting:
            status = JobStatus.FAILED
        else:
            status = JobStatus.RUNNING if self.job_status == "RUNNING" else JobStatus.PENDING
        return JobInfo(submission_id=self.job_id, status=status, message=self.message or None, metadata=self.metadata)

    def outcome(self, *, deadline_was_the_tasks: bool = False) -> tuple[str, str]:
        """(outcome status, message) of a terminal RayJob: SUCCEEDED, STOPPED, FAILED, REFUSED, TIMEOUT or ERROR."""
        if self.deployment_status == "Complete":
            status = self.job_status if self.job_status in JobStatus.__members__ else "SUCCEEDED"
            return status, self.message
        if self.deployment_status == "ValidationFailed":
            return REFUSED_STATUS, f"KubeRay refused the RayJob [RayJob {self.name}]: {self.message or 'no message'}"
        if self.reason == "DeadlineExceeded" and deadline_was_the_tasks:
            return (
                TIMEOUT_STATUS,
                "the task's execution_timeout ran out while the job still ran (the RayJob's activeDeadlineSeconds)",
            )
        status, meaning = OUTCOMES.get(self.reason, ("FAILED", f"the RayJob failed ({self.reason or 'KubeRay gave no reason'})"))
        detail = f": {self.message}" if self.message else ""
        return status, f"{meaning} [RayJob {self.name}, reason {self.reason or 'none'}]{detail}"
