"""The "Drift report" extra link: opens the HTML report of a drift check in MLflow's UI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

# XCom DriftSensor pushes once the report is logged: {"url", "run_id", "artifact_path"}.
XCOM_KEY = "drift_report"


def report_link_value(tracking_uri: str, client: Any, run_id: str, artifact_path: str) -> dict[str, str]:
    """Where MLflow's UI shows `artifact_path` of run `run_id` ('' url for a store without a UI)."""
    url = ""
    if tracking_uri.startswith(("http://", "https://")):
        parts = urlsplit(tracking_uri)
        # Credentials in the URL (user:password@host) never reach a link.
        base = urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, "", "")).rstrip("/")
        experiment = client.get_run(run_id).info.experiment_id
        url = f"{base}/#/experiments/{quote(str(experiment), safe='')}/runs/{quote(run_id, safe='')}/artifactPath/{quote(artifact_path)}"
    return {"url": url, "run_id": run_id, "artifact_path": artifact_path}


class DriftReportLink(BaseOperatorLink):
    """The check's drift.html among the champion run's artifacts; empty when MLflow has no UI."""

    name = "Drift report"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        value = XCom.get_value(ti_key=ti_key, key=XCOM_KEY)
        url = value.get("url") if isinstance(value, dict) else None
        return url if isinstance(url, str) and url.startswith("http") else ""
