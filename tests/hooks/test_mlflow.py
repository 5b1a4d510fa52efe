"""MlflowHook against a real MLflow server on 127.0.0.1."""

from __future__ import annotations

import json

from airflow_provider_rayops.hooks.mlflow import MlflowHook, embedded_tracking_uri


def test_connection_reaches_a_real_tracking_server(mlflow_server, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_TEST", json.dumps({"conn_type": "rayops_mlflow", "host": mlflow_server}))
    hook = MlflowHook(mlflow_conn_id="mlflow_test")
    assert hook.tracking_uri() == mlflow_server
    ok, message = hook.test_connection()
    assert ok, message


def test_job_env_carries_basic_auth_or_token(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_BASIC",
        json.dumps({"conn_type": "rayops_mlflow", "host": "mlflow.ml", "port": 5000, "login": "ml", "password": "s3cret"}),
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_TOKEN",
        json.dumps({"conn_type": "rayops_mlflow", "host": "https://mlflow.example", "password": "tok"}),
    )
    assert MlflowHook("mlflow_basic").job_env() == {
        "MLFLOW_TRACKING_URI": "http://mlflow.ml:5000",
        "MLFLOW_TRACKING_USERNAME": "ml",
        "MLFLOW_TRACKING_PASSWORD": "s3cret",
    }
    assert MlflowHook("mlflow_token").job_env() == {
        "MLFLOW_TRACKING_URI": "https://mlflow.example",
        "MLFLOW_TRACKING_TOKEN": "tok",
    }


def test_no_connection_means_the_embedded_sqlite_store(monkeypatch, tmp_path):
    monkeypatch.setenv("RAYOPS_HOME", str(tmp_path))
    assert MlflowHook(None).job_env() == {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow/mlflow.db"}
    assert embedded_tracking_uri() == f"sqlite:///{tmp_path}/mlflow/mlflow.db"


def test_a_failing_server_is_reported_without_credentials(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_DOWN",
        json.dumps({"conn_type": "rayops_mlflow", "host": "http://127.0.0.1:9", "login": "u", "password": "hunter2"}),
    )
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    ok, message = MlflowHook("mlflow_down").test_connection()
    assert not ok
    assert "hunter2" not in message


def test_a_pipeline_cannot_hand_another_kind_of_connection_to_its_jobs(monkeypatch):
    """Pipeline YAML names connections by id and their values reach Ray jobs: only rayops' own types."""
    import pytest

    from airflow_provider_rayops.hooks import WrongConnectionType
    from airflow_provider_rayops.hooks.s3 import S3StorageHook

    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({"conn_type": "aws", "login": "AKIA", "password": "cloud-secret"}))
    with pytest.raises(
        WrongConnectionType,
        match="connection 'aws_default' is of type 'aws'; rayops reads only connections of type 'rayops_mlflow'",
    ):
        MlflowHook("aws_default").job_env()
    with pytest.raises(WrongConnectionType, match="of type 'rayops_s3' here"):
        S3StorageHook("aws_default").job_env()


class _RecordingTrackingServer:
    """A real HTTP server on 127.0.0.1 that answers MLflow's REST calls for experiments and
    registered models with empty results and records each request's Authorization header.
    (Standing in for an auth-enabled MLflow server: `mlflow server --app-name basic-auth` needs
    extras the test environment does not install.)"""

    def __init__(self) -> None:
        import http.server
        import threading

        seen = self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self) -> None:
                seen.append((self.path.split("?")[0], self.headers.get("Authorization")))
                body = b'{"experiments": []}' if "experiments" in self.path else b'{"registered_models": []}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_get_conn_authenticates_without_touching_the_environment(monkeypatch):
    """Tracking and registry calls carry the connection's credentials; os.environ never sees them,
    so other connections (and other tasks in a triggerer or worker process) do not get them."""
    import base64
    import os

    server = _RecordingTrackingServer()
    try:
        monkeypatch.setenv(
            "AIRFLOW_CONN_MLFLOW_BASIC",
            json.dumps({"conn_type": "rayops_mlflow", "host": server.url, "login": "ml", "password": "s3cret"}),
        )
        monkeypatch.setenv(
            "AIRFLOW_CONN_MLFLOW_TOKEN", json.dumps({"conn_type": "rayops_mlflow", "host": server.url, "password": "tok"})
        )
        for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        before = dict(os.environ)

        basic = MlflowHook("mlflow_basic").get_conn()
        token = MlflowHook("mlflow_token").get_conn()
        assert basic.tracking_uri == server.url
        basic.search_experiments(max_results=1)
        token.search_registered_models(max_results=1)
        basic.search_registered_models(max_results=1)

        assert dict(os.environ) == before
        assert server.seen == [
            ("/api/2.0/mlflow/experiments/search", "Basic " + base64.b64encode(b"ml:s3cret").decode()),
            ("/api/2.0/mlflow/registered-models/search", "Bearer tok"),
            ("/api/2.0/mlflow/registered-models/search", "Basic " + base64.b64encode(b"ml:s3cret").decode()),
        ]
    finally:
        server.close()


def test_get_conn_of_no_connection_is_the_embedded_store(monkeypatch, tmp_path):
    monkeypatch.setenv("RAYOPS_HOME", str(tmp_path))
    client = MlflowHook(None).get_conn()
    assert client.tracking_uri == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    assert (tmp_path / "mlflow").is_dir()
