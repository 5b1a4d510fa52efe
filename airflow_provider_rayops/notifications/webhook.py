"""WebhookNotifier: a failed task, as JSON POSTed to a URL from an Airflow connection.

The connection's host is the URL (with its scheme and path: an incoming webhook of Slack or
Teams, or any HTTP endpoint); its password, when set, goes as a bearer token. The body:

    {"text": "rayops: churn / train.fit failed (try 2): <error>", "pipeline", "dag_id", "run_id",
     "task_id", "try_number", "state", "error", "log_url", "logical_date"}

Nothing of the body is rendered as a template (config is data); a webhook that cannot be reached
is logged, and never hides the task's own failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import BaseHook, BaseNotifier

from airflow_provider_rayops.hooks import connection_url


class WebhookNotifier(BaseNotifier):
    """POST the failure as JSON to the URL of connection `conn_id` (see the module doc)."""

    template_fields = ()  # nothing from a config is ever rendered

    def __init__(self, *, conn_id: str, pipeline: str | None = None, timeout: float = 10.0) -> None:
        super().__init__()
        self.conn_id = conn_id
        self.pipeline = pipeline
        self.timeout = timeout

    def notify(self, context: Mapping[str, Any]) -> None:
        import requests

        body = alert_body(context, pipeline=self.pipeline)
        conn = BaseHook.get_connection(self.conn_id)
        url = connection_url(conn.host, conn.port)
        if not url:
            self.log.error("alert not sent: connection %r has no URL in its host", self.conn_id)
            return
        headers = {"Authorization": f"Bearer {conn.password}"} if conn.password else {}
        try:
            response = requests.post(url, json=body, headers=headers, timeout=self.timeout)
            response.raise_for_status()
        except requests.RequestException as exc:  # an alert that fails must not mask the failure itself
            self.log.error("alert to connection %r failed: %s", self.conn_id, type(exc).__name__)
            return
        self.log.info("alert sent to connection %r: %s", self.conn_id, body["text"])


def alert_body(context: Mapping[str, Any], *, pipeline: str | None = None) -> dict[str, Any]:
    """What a failed task tells: its identity, the error, and where its log is."""
    ti = context.get("ti") or context.get("task_instance")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", None)
    task_id = getattr(ti, "task_id", None)
    error = context.get("exception")
    reason = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else (str(error) if error else None)
    text = f"rayops: {pipeline or dag_id} / {task_id} failed (try {getattr(ti, 'try_number', '?')})"
    if reason:
        text += f": {reason.splitlines()[0][:300]}"
    logical = context.get("logical_date")
    return {
        "text": text,
        "pipeline": pipeline,
        "dag_id": dag_id,
        "run_id": getattr(ti, "run_id", None) or context.get("run_id"),
        "task_id": task_id,
        "try_number": getattr(ti, "try_number", None),
        "state": "failed",
        "error": reason,
        "log_url": getattr(ti, "log_url", None),
        "logical_date": logical.isoformat() if logical is not None and hasattr(logical, "isoformat") else None,
    }
