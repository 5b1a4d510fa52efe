"""Alerts: a task that fails for good POSTs its failure to a webhook (a real HTTP server on 127.0.0.1)."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
from collections.abc import Iterator

import pytest
from airflow.sdk import DAG, task

from airflow_provider_rayops.notifications.webhook import WebhookNotifier
from tests.fixtures.airflow_db import run_dag_test

CONN_ID = "rayops_alerts_test"


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": json.loads(body)})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook(monkeypatch) -> Iterator[list[dict]]:
    """A webhook endpoint on 127.0.0.1 and the Airflow connection naming it (its password a token)."""
    _Receiver.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    conn = {"conn_type": "http", "host": f"http://{host}:{port}/hooks/ml-alerts", "password": "s3cret-token"}
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", json.dumps(conn))
    try:
        yield _Receiver.received
    finally:
        server.shutdown()


def test_a_task_that_fails_for_good_posts_its_failure_to_the_webhook(airflow_db, webhook):
    with DAG(
        "rayops_test_alerts",
        schedule=None,
        start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        default_args={"on_failure_callback": [WebhookNotifier(conn_id=CONN_ID, pipeline="churn")], "retries": 0},
    ) as dag:

        @task(task_id="train.fit")
        def fit() -> None:
            raise RuntimeError("the training data is gone {{ conn.rayops_alerts_test.password }}")

        fit()

    run = run_dag_test(dag)
    assert run.state == "failed"
    [alert] = webhook
    assert alert["path"] == "/hooks/ml-alerts" and alert["auth"] == "Bearer s3cret-token"
    body = alert["body"]
    assert (body["pipeline"], body["dag_id"], body["task_id"], body["state"]) == (
        "churn",
        "rayops_test_alerts",
        "train.fit",
        "failed",
    )
    assert body["run_id"] == run.run_id
    # The error as raised: nothing in an alert is rendered as a template.
    assert body["error"] == "RuntimeError: the training data is gone {{ conn.rayops_alerts_test.password }}"
    assert body["text"].startswith("rayops: churn / train.fit failed (try 1): RuntimeError: the training data is gone")
