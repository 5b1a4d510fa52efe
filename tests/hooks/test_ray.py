"""The rayops_ray connection: dashboard URL in host, Ray token in password."""

from __future__ import annotations

import asyncio
import json

import pytest

from airflow_provider_rayops.hooks.ray import RayHook
from airflow_provider_rayops.hooks.ray_jobs_api import BackendNotAvailable, RayEndpoint


def _set_connection(monkeypatch, conn_id: str, **fields) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "rayops_ray", **fields}))


def test_the_hook_owns_the_rayops_ray_connection_type():
    assert (RayHook.conn_type, RayHook.conn_name_attr, RayHook.default_conn_name, RayHook.hook_name) == (
        "rayops_ray",
        "ray_conn_id",
        "rayops_ray_default",
        "Ray (rayops)",
    )
    from airflow_provider_rayops import get_provider_info

    types = {c["connection-type"]: c["hook-class-name"] for c in get_provider_info()["connection-types"]}
    assert types["rayops_ray"] == "airflow_provider_rayops.hooks.ray.RayHook"


def test_the_connection_form_shows_only_the_dashboard_url_and_token():
    behaviour = RayHook.get_ui_field_behaviour()
    assert set(behaviour["hidden_fields"]) == {"schema", "login", "port", "extra"}
    assert behaviour["relabeling"] == {"host": "Dashboard URL", "password": "Ray auth token"}
    assert behaviour["placeholders"]["host"] == "http://127.0.0.1:8265"


def test_host_and_password_become_the_endpoint(monkeypatch):
    _set_connection(monkeypatch, "ray_dev", host="https://ray.dev.example:8443/", password="tok")
    assert RayHook(ray_conn_id="ray_dev").get_endpoint() == RayEndpoint("https://ray.dev.example:8443", "tok")


def test_a_bare_host_gets_http_and_the_port_field(monkeypatch):
    _set_connection(monkeypatch, "ray_bare", host="ray-head.ml", port=8265)
    assert RayHook(ray_conn_id="ray_bare").get_endpoint() == RayEndpoint("http://ray-head.ml:8265", None)


def test_a_connection_without_host_is_refused(monkeypatch):
    _set_connection(monkeypatch, "ray_nohost", password="tok")
    with pytest.raises(BackendNotAvailable, match="has no host"):
        RayHook(ray_conn_id="ray_nohost").get_endpoint()


def test_the_endpoint_is_read_without_blocking_from_async_code(monkeypatch):
    _set_connection(monkeypatch, "ray_async", host="http://127.0.0.1:8265", password="tok")
    endpoint = asyncio.run(RayHook(ray_conn_id="ray_async").aget_endpoint())
    assert endpoint == RayEndpoint("http://127.0.0.1:8265", "tok")


def test_test_connection_succeeds_with_the_head_token(monkeypatch, ray_head):
    _set_connection(monkeypatch, "ray_ok", host=ray_head.dashboard_url, password=ray_head.endpoint.token)
    ok, message = RayHook(ray_conn_id="ray_ok").test_connection()
    assert ok, message
    assert message == "Ray 2.60.0 answers with this token"


def test_test_connection_reports_a_refused_token_without_showing_it(monkeypatch, ray_head):
    _set_connection(monkeypatch, "ray_bad", host=ray_head.dashboard_url, password="wrong-token-value")
    ok, message = RayHook(ray_conn_id="ray_bad").test_connection()
    assert not ok
    assert "refused the token (HTTP 403" in message
    assert "wrong-token-value" not in message


def test_the_hook_gives_sync_and_async_jobs_clients_for_its_cluster(monkeypatch, ray_head):
    """What an operator and a trigger use: submit with the sync client, follow with the async one."""
    import time

    from airflow_provider_rayops.hooks.ray_jobs_api import AsyncRayJobsClient, JobStatus, RayJobsClient

    _set_connection(monkeypatch, "ray_clients", host=ray_head.dashboard_url, password=ray_head.endpoint.token)
    hook = RayHook(ray_conn_id="ray_clients", timeout_s=7)
    client = hook.get_conn()
    assert isinstance(client, RayJobsClient) and client.timeout_s == 7
    sid = f"hook-clients-{time.time_ns()}"
    client.submit(submission_id=sid, entrypoint="echo from-the-hook", entrypoint_num_cpus=0.1)

    async def follow() -> tuple[JobStatus, str]:
        async with await hook.get_async_conn() as aclient:
            assert isinstance(aclient, AsyncRayJobsClient)
            text = "".join([chunk async for chunk in aclient.tail_logs(sid)])
            info = await aclient.get_job(sid)
            assert await aclient.get_job("no-such-job") is None
            return info.status, text

    status, text = asyncio.run(follow())
    assert status is JobStatus.SUCCEEDED
    assert "from-the-hook" in text


@pytest.mark.parametrize(
    ("host", "port", "default_scheme", "url"),
    [
        ("https://ray.dev.example:8443/", None, "http", "https://ray.dev.example:8443"),
        (" ray-head.ml ", 8265, "http", "http://ray-head.ml:8265"),
        ("http://ray-head.ml:8265", 9999, "http", "http://ray-head.ml:8265"),  # the host's own port wins
        ("http://mlflow.ml/base/", 5000, "http", "http://mlflow.ml:5000/base"),  # the port goes before the path
        ("http://[::1]", 5000, "http", "http://[::1]:5000"),
        ("minio.data", 9000, None, "minio.data:9000"),  # S3: no scheme added, `secure` decides
        ("", 9000, "http", None),
    ],
)
def test_the_three_hooks_read_host_and_port_one_way(host, port, default_scheme, url):
    from airflow_provider_rayops.hooks import connection_url

    assert connection_url(host, port, default_scheme=default_scheme) == url
