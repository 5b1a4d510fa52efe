"""The `rayops_mlflow` connection: the MLflow tracking server (and its model registry).

Fields: host = tracking server URL (`http://mlflow.ml:5000`), login + password = basic
auth, or password alone = bearer token. With no connection, rayops uses the embedded
default: a SQLite store under $RAYOPS_HOME/mlflow (a registry needs a database store).

The hook gives code in Airflow the tracking URI, and Ray jobs the standard MLflow
environment variables (`job_env()`), so the same job code talks to either.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import BaseHook

from airflow_provider_rayops.hooks import checked
from airflow_provider_rayops.jobs.tracking import embedded_tracking_uri


class MlflowHook(BaseHook):
    """Reads a `rayops_mlflow` connection; gives the tracking URI and a Ray job's env vars."""

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "rayops_mlflow_default"
    conn_type = "rayops_mlflow"
    hook_name = "MLflow tracking server (rayops)"

    def __init__(self, mlflow_conn_id: str | None = default_conn_name) -> None:
        super().__init__()
        self.mlflow_conn_id = mlflow_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "port", "extra"],
            "relabeling": {"host": "Tracking server URL", "login": "Username", "password": "Password or token"},
            "placeholders": {
                "host": "http://mlflow.ml:5000",
                "login": "empty for token auth",
                "password": "basic-auth password, or a bearer token when username is empty",
            },
        }

    def tracking_uri(self) -> str:
        if not self.mlflow_conn_id:
            return embedded_tracking_uri()
        conn = checked(self.get_connection(self.mlflow_conn_id), conn_id=self.mlflow_conn_id, conn_type=self.conn_type)
        if not conn.host:
            raise ValueError(f"connection {self.mlflow_conn_id!r}: host must be the tracking server URL, e.g. http://mlflow:5000")
        host = conn.host if "://" in conn.host else f"http://{conn.host}"
        return f"{host.rstrip('/')}:{conn.port}" if conn.port and host.count(":") < 2 else host.rstrip("/")

    def job_env(self) -> dict[str, str]:
        """MLflow's own environment variables for a Ray job. Holds credentials: never log them."""
        env = {"MLFLOW_TRACKING_URI": self.tracking_uri()}
        if self.mlflow_conn_id:
            conn = checked(self.get_connection(self.mlflow_conn_id), conn_id=self.mlflow_conn_id, conn_type=self.conn_type)
            if conn.login:
                env["MLFLOW_TRACKING_USERNAME"] = conn.login
                env["MLFLOW_TRACKING_PASSWORD"] = conn.password or ""
            elif conn.password:
                env["MLFLOW_TRACKING_TOKEN"] = conn.password
        return env

    def test_connection(self) -> tuple[bool, str]:
        """Ask the server for its experiments (the UI's Test button)."""
        from mlflow.tracking import MlflowClient

        env = self.job_env()
        saved = {k: os.environ.get(k) for k in env}
        try:
            os.environ.update(env)
            MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"]).search_experiments(max_results=1)
            return True, f"reached {env['MLFLOW_TRACKING_URI']}"
        except Exception as exc:  # the UI shows the message; keep credentials out of it
            return False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
