"""The "Ray job" extra link: opens a task's Ray job in the Ray dashboard."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

from airflow_provider_rayops.hooks.ray_jobs_api import job_url

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

# XCom the operator pushes as soon as it knows its job: {"dashboard_url", "submission_id", "job_url"}.
XCOM_KEY = "ray_job"


def link_xcom_value(dashboard_url: str, submission_id: str) -> dict[str, str]:
    return {"dashboard_url": dashboard_url, "submission_id": submission_id, "job_url": job_url(dashboard_url, submission_id)}


def url_from_xcom(value: Any) -> str:
    """The dashboard URL of the job an XCom value names ('' for anything else)."""
    if not isinstance(value, dict) or not value.get("dashboard_url") or not value.get("submission_id"):
        return ""
    return job_url(str(value["dashboard_url"]), str(value["submission_id"]))


class RayJobLink(BaseOperatorLink):
    """`<dashboard>/#/jobs/<submission_id>` of the job SubmitRayJobOperator ran for this try."""

    name = "Ray job"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return url_from_xcom(XCom.get_value(ti_key=ti_key, key=XCOM_KEY))
