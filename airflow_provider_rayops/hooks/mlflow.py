"""The `rayops_mlflow` connection: the MLflow tracking server (and its model registry).

Fields: host = tracking server URL (`http://mlflow.ml:5000`), login + password = basic
auth, or password alone = bearer token. With no connection, rayops uses the embedded
default: a SQLite store under $RAYOPS_HOME/mlflow (a registry needs a database store).

The hook gives code in Airflow an `MlflowClient` (`get_conn()`) that carries the connection's
credentials itself, and Ray jobs the standard MLflow environment variables (`job_env()`), so
the same job code talks to either. Nothing here sets `os.environ`: MLflow reads credentials
from the environment by default, and a task process (or a triggerer running many) must not
share one connection's secret with everything else in it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_provider_rayops.hooks import checked, connection_url
from airflow_provider_rayops.jobs.tracking import embedded_tracking_uri

if TYPE_CHECKING:
    from mlflow import MlflowClient


class MlflowHook(BaseHook):
    """Reads a `rayops_mlflow` connection; gives an `MlflowClient`, the tracking URI and a Ray job's env vars.

    :param mlflow_conn_id: the connection; None (the operators' default too) means the embedded
        store under $RAYOPS_HOME/mlflow.
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "rayops_mlflow_default"
    conn_type = "rayops_mlflow"
    hook_name = "MLflow tracking server (rayops)"

    def __init__(self, mlflow_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
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
        url = connection_url(conn.host, conn.port)
        if url is None:
            raise ValueError(f"connection {self.mlflow_conn_id!r}: host must be the tracking server URL, e.g. http://mlflow:5000")
        return url

    def job_env(self, *, credentials: bool = True) -> dict[str, str]:
        """MLflow's own environment variables for a Ray job. Holds credentials: never log them.
        `credentials=False` leaves them out (the job's pods have their own: kuberay's secret_env)."""
        env = {"MLFLOW_TRACKING_URI": self.tracking_uri()}
        if self.mlflow_conn_id and credentials:
            conn = checked(self.get_connection(self.mlflow_conn_id), conn_id=self.mlflow_conn_id, conn_type=self.conn_type)
            if conn.login:
                env["MLFLOW_TRACKING_USERNAME"] = conn.login
                env["MLFLOW_TRACKING_PASSWORD"] = conn.password or ""
            elif conn.password:
                env["MLFLOW_TRACKING_TOKEN"] = conn.password
        return env

    def get_conn(self) -> MlflowClient:
        """An `MlflowClient` for the tracking server and its model registry.

        For a server with credentials, the client's tracking and registry stores hold them
        (basic auth, or a bearer token): its REST calls authenticate without MLflow's
        environment variables. MLflow's artifact repositories read credentials only from the
        environment, so code in Airflow writes artifacts through `log_artifact` only (Ray jobs
        use MLflow's own, with `job_env()`).
        """
        from mlflow import MlflowClient

        uri = self.tracking_uri()
        if uri.startswith("sqlite:///"):
            os.makedirs(os.path.dirname(uri[len("sqlite:///") :]), exist_ok=True)
            return MlflowClient(tracking_uri=uri, registry_uri=uri)
        return _client_with_credentials(uri, self._credentials())

    def log_artifact(self, run_id: str, artifact_path: str, data: bytes, *, settings: Any = None) -> str:
        """Write `data` as the run's artifact `artifact_path`; its URI.

        MLflow's artifact repositories take credentials from the environment only (see get_conn),
        so this writes where the run's artifacts live itself: through the tracking server's
        artifact proxy (`mlflow-artifacts:`) with the connection's credentials, to a local folder
        (the embedded store), or to S3 with the pipeline's storage `settings`.
        """
        import requests

        from airflow_provider_rayops import storage

        client = self.get_conn()
        root = client.get_run(run_id).info.artifact_uri.rstrip("/")
        if root.startswith("mlflow-artifacts:"):
            rest = root[len("mlflow-artifacts:") :].lstrip("/")
            if root.startswith("mlflow-artifacts://"):  # mlflow-artifacts://host:port/path
                rest = rest.split("/", 1)[1] if "/" in rest else ""
            url = f"{self.tracking_uri().rstrip('/')}/api/2.0/mlflow-artifacts/artifacts/{rest}/{artifact_path}"
            credentials = self._credentials()
            username = credentials.get("username")
            auth = (username, credentials.get("password") or "") if username else None
            headers = {"Authorization": f"Bearer {credentials['token']}"} if credentials.get("token") else {}
            # TLS as MLflow's own client would (its MLFLOW_TRACKING_SERVER_CERT_PATH / _INSECURE_TLS settings).
            from mlflow.utils.credentials import get_default_host_creds

            creds = get_default_host_creds(self.tracking_uri())
            verify = creds.server_cert_path or not creds.ignore_tls_verification
            response = requests.put(url, data=data, auth=auth, headers=headers, timeout=60, verify=verify)
            response.raise_for_status()
            return f"{root}/{artifact_path}"
        if root.startswith("s3://"):
            storage.write_bytes(f"{root}/{artifact_path}", data, settings=settings)
            return f"{root}/{artifact_path}"
        folder = root[len("file://") :] if root.startswith("file://") else root
        if "://" in folder:
            raise ValueError(f"run {run_id}'s artifacts live at {root}, which rayops cannot write from Airflow")
        target = os.path.join(folder, artifact_path)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target + ".tmp", "wb") as handle:
            handle.write(data)
        os.replace(target + ".tmp", target)
        return target

    def _credentials(self) -> dict[str, str | None]:
        if not self.mlflow_conn_id:
            return {}
        conn = checked(self.get_connection(self.mlflow_conn_id), conn_id=self.mlflow_conn_id, conn_type=self.conn_type)
        if conn.login:
            return {"username": conn.login, "password": conn.password or ""}
        return {"token": conn.password} if conn.password else {}

    def test_connection(self) -> tuple[bool, str]:
        """Ask the server for its experiments (the UI's Test button)."""
        try:
            client = self.get_conn()
            client.search_experiments(max_results=1)
            return True, f"reached {client.tracking_uri}"
        except Exception as exc:  # the UI shows the message; keep credentials out of it
            return False, f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"


def _client_with_credentials(uri: str, credentials: dict[str, str | None]) -> MlflowClient:
    """An MlflowClient whose tracking and registry REST stores send `credentials`.

    MLflow builds its REST stores with credentials read from the environment on each request;
    these stores get them from here instead. It relies on `MlflowClient` keeping its tracking
    client in `_tracking_client` and its registry client in `_registry_client_lazy` (MLflow 3;
    tests/hooks/test_mlflow.py checks the headers a real HTTP server receives).
    """
    from mlflow import MlflowClient
    from mlflow.store.model_registry.rest_store import RestStore as RegistryRestStore
    from mlflow.store.tracking.rest_store import RestStore as TrackingRestStore
    from mlflow.tracking._model_registry.client import ModelRegistryClient
    from mlflow.tracking._tracking_service.client import TrackingServiceClient
    from mlflow.utils.credentials import get_default_host_creds
    from mlflow.utils.rest_utils import MlflowHostCreds

    # MLflow's defaults for this URI (TLS verification, CA and client certificates from its own
    # MLFLOW_TRACKING_* settings), with the connection's credentials in place of the environment's.
    default = get_default_host_creds(uri)
    creds = MlflowHostCreds(
        host=uri,
        username=credentials.get("username"),
        password=credentials.get("password"),
        token=credentials.get("token"),
        aws_sigv4=default.aws_sigv4,
        auth=default.auth,
        ignore_tls_verification=default.ignore_tls_verification,
        client_cert_path=default.client_cert_path,
        server_cert_path=default.server_cert_path,
    )
    tracking_store = TrackingRestStore(lambda: creds)
    registry_store = RegistryRestStore(lambda: creds)

    class _Tracking(TrackingServiceClient):
        @property
        def store(self) -> Any:
            return tracking_store

    class _Registry(ModelRegistryClient):
        @property
        def store(self) -> Any:
            return registry_store

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client._tracking_client = _Tracking(uri)
    client._registry_client_lazy = _Registry(uri, uri)  # type: ignore[attr-defined]
    return client
