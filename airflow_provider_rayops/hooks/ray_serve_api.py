"""The Ray Serve REST API of a cluster's dashboard, and the HTTP endpoint its proxies serve.

`RayServeClient` speaks to the same dashboard and token as the Jobs API clients
(`RayEndpoint`): `GET /api/serve/applications/` says what runs, `PUT` replaces it. A PUT
replaces *every* application on the cluster, so callers send back the ones they do not own
(serving/config.py `replace_pipeline`). No Airflow and no Ray here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from airflow_provider_rayops.hooks.ray_jobs_api import (
    HTTP_TIMEOUT_S,
    BackendNotAvailable,
    RayEndpoint,
    _unreachable,
    check_response,
)

APPLICATIONS_PATH = "/api/serve/applications/"


class ServeNotAvailable(BackendNotAvailable):
    """The Serve API refused a config or cannot run one (the message says why)."""


class RayServeClient:
    """Blocking client of one Ray cluster's Serve REST API (requests)."""

    def __init__(self, endpoint: RayEndpoint, *, timeout_s: float = HTTP_TIMEOUT_S) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s

    def _request(self, method: str, *, body: Mapping[str, Any] | None = None) -> Any:
        import requests

        url = self.endpoint.dashboard_url.rstrip("/") + APPLICATIONS_PATH
        try:
            response = requests.request(method, url, headers=self.endpoint.headers(), json=body, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise _unreachable(self.endpoint, exc) from None
        check_response(self.endpoint, response, api=f"Ray Serve API ({method})", error=ServeNotAvailable)
        return response

    def details(self) -> dict[str, Any]:
        """What Serve runs: `{"http_options", "applications": {name: {status, message,
        deployed_app_config, deployments, ...}}, ...}` (applications empty when Serve is not started)."""
        data = self._request("GET").json()
        data.setdefault("applications", {})
        return data

    def put(self, config: Mapping[str, Any]) -> None:
        """Replace every application on the cluster by those of `config` (Serve starts if needed)."""
        self._request("PUT", body=config)

    def proxy_url(self, port: int) -> str:
        """Where the cluster's Serve proxies answer: the dashboard's host, at `port`."""
        return proxy_url(self.endpoint.dashboard_url, port)


def proxy_url(dashboard_url: str, port: int) -> str:
    """The Serve proxy on the dashboard's host: `http://<host>:<port>`."""
    parts = urlsplit(dashboard_url if "://" in dashboard_url else f"http://{dashboard_url}")
    host = parts.hostname or "127.0.0.1"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    return f"{parts.scheme or 'http'}://{host}:{port}"
