"""The `rayops_ray` connection: an existing Ray cluster's dashboard (Jobs API) and its token.

Fields: host = dashboard URL (`http://ray-head.ml:8265`; a bare host gets `http://`, and the
port field is used only when the host has none), password = the Ray auth token (empty for a
cluster without token auth). The type is prefixed `rayops_` because `ray` belongs to another
provider.

    AIRFLOW_CONN_RAYOPS_RAY_DEFAULT='{"conn_type": "rayops_ray", "host": "http://127.0.0.1:8265", "password": "<token>"}'
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from airflow.sdk import BaseHook

from airflow_provider_rayops.hooks import checked, connection_url
from airflow_provider_rayops.hooks.ray_jobs_api import (
    HTTP_TIMEOUT_S,
    AsyncRayJobsClient,
    BackendNotAvailable,
    RayEndpoint,
    RayJobsClient,
)


class RayHook(BaseHook):
    """Reads a `rayops_ray` connection; gives its `RayEndpoint` and Jobs API clients (sync and async).

    :param timeout_s: seconds each HTTP request to the dashboard may take.
    """

    conn_name_attr = "ray_conn_id"
    default_conn_name = "rayops_ray_default"
    conn_type = "rayops_ray"
    hook_name = "Ray (rayops)"

    def __init__(self, ray_conn_id: str = default_conn_name, *, timeout_s: float = HTTP_TIMEOUT_S, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ray_conn_id = ray_conn_id
        self.timeout_s = timeout_s

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema", "login", "port", "extra"],
            "relabeling": {"host": "Dashboard URL", "password": "Ray auth token"},
            "placeholders": {
                "host": "http://127.0.0.1:8265",
                "password": "the cluster's RAY_AUTH_TOKEN (empty if token auth is off)",
            },
        }

    def get_endpoint(self) -> RayEndpoint:
        """The dashboard URL and token of the connection."""
        conn = checked(self.get_connection(self.ray_conn_id), conn_id=self.ray_conn_id, conn_type=self.conn_type)
        return endpoint_from_connection(conn, conn_id=self.ray_conn_id)

    async def aget_endpoint(self) -> RayEndpoint:
        """The same, from async code (triggers): the connection is read without blocking the loop."""
        conn = checked(await self.aget_connection(self.ray_conn_id), conn_id=self.ray_conn_id, conn_type=self.conn_type)
        return endpoint_from_connection(conn, conn_id=self.ray_conn_id)

    def get_conn(self) -> RayJobsClient:
        """A blocking Jobs API client for the cluster (submit, status, logs, stop)."""
        return RayJobsClient(self.get_endpoint(), timeout_s=self.timeout_s)

    async def get_async_conn(self) -> AsyncRayJobsClient:
        """A non-blocking Jobs API client (status, log tail, stop), for triggers; use it in `async with`."""
        return AsyncRayJobsClient(await self.aget_endpoint(), timeout_s=self.timeout_s)

    def test_connection(self) -> tuple[bool, str]:
        """Ask the dashboard for its version with the token (the UI's Test button)."""
        try:
            version = self.get_conn().version()
        except BackendNotAvailable as exc:
            return False, str(exc)
        return True, f"Ray {version.get('ray_version', '?')} answers with this token"


def endpoint_from_connection(conn: Any, *, conn_id: str) -> RayEndpoint:
    url = connection_url(conn.host, conn.port)
    if url is None:
        raise BackendNotAvailable(
            f"connection {conn_id} has no host: set it to the Ray dashboard URL, e.g. http://127.0.0.1:8265"
        )
    scheme = urlsplit(url).scheme
    if scheme not in ("http", "https"):
        raise BackendNotAvailable(f"connection {conn_id}: the dashboard URL must be http:// or https://, got {scheme}://")
    return RayEndpoint(dashboard_url=url, token=(conn.password or None))
