"""S3StorageHook: a `rayops_s3` connection becomes S3Settings and a Ray job's environment."""

from __future__ import annotations

import json
import sys

import pytest

from airflow_provider_rayops import get_provider_info, storage
from airflow_provider_rayops.hooks.s3 import S3StorageHook
from airflow_provider_rayops.storage import S3Settings, StorageConfigError
from tests.fixtures.s3 import S3_BUCKET


def _set_connection(monkeypatch, conn_id: str, **fields) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": "rayops_s3", **fields}))


def test_hook_declares_the_rayops_s3_connection_type() -> None:
    assert S3StorageHook.conn_type == "rayops_s3"
    assert S3StorageHook.conn_name_attr == "s3_conn_id"
    assert S3StorageHook.default_conn_name == "rayops_s3_default"
    assert S3StorageHook.hook_name == "S3 / MinIO storage (rayops)"
    declared = {c["connection-type"]: c["hook-class-name"] for c in get_provider_info()["connection-types"]}
    assert declared["rayops_s3"] == f"{S3StorageHook.__module__}.{S3StorageHook.__qualname__}"


def test_connection_fields_become_settings(monkeypatch) -> None:
    _set_connection(
        monkeypatch,
        "minio_prod",
        host="http://minio.data:9000",
        login="access",
        password="secret",
        extra={"region": "eu-central-1"},
    )
    assert S3StorageHook(s3_conn_id="minio_prod").get_settings() == S3Settings(
        endpoint_url="http://minio.data:9000", access_key="access", secret_key="secret", region="eu-central-1"
    )


def test_bare_host_takes_port_and_secure_from_the_connection(monkeypatch) -> None:
    _set_connection(monkeypatch, "minio_bare", host="minio.data", port=9000, extra={"secure": "false"})
    assert S3StorageHook(s3_conn_id="minio_bare").get_settings().endpoint_url == "http://minio.data:9000"


def test_no_connection_means_this_processs_environment_and_nothing_for_jobs(monkeypatch) -> None:
    """As the operators' storage_conn_id=None: no credentials are handed to a job."""
    monkeypatch.setenv("RAYOPS_S3_ENDPOINT_URL", "https://s3.example.com")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    hook = S3StorageHook()
    assert (hook.get_settings().endpoint_url, hook.get_settings().access_key) == ("https://s3.example.com", "from-env")
    assert hook.job_env() == {}


def test_the_default_connection_is_named_like_airflow_shows_it(monkeypatch) -> None:
    _set_connection(monkeypatch, "rayops_s3_default", host="https://s3.example.com")
    assert S3StorageHook(S3StorageHook.default_conn_name).get_settings().endpoint_url == "https://s3.example.com"


def test_get_conn_is_a_filesystem_on_the_connections_endpoint(monkeypatch, s3_endpoint) -> None:
    import pyarrow.fs

    from tests.fixtures.s3 import S3_BUCKET

    settings = s3_endpoint
    _set_connection(monkeypatch, "s3_fs", host=settings.endpoint_url, login=settings.access_key, password=settings.secret_key)
    fs = S3StorageHook("s3_fs").get_conn()
    assert isinstance(fs, pyarrow.fs.S3FileSystem)
    with fs.open_output_stream(f"{S3_BUCKET}/hook-get-conn/hello.txt") as out:
        out.write(b"hello from the hook")
    with fs.open_input_stream(f"{S3_BUCKET}/hook-get-conn/hello.txt") as data:
        assert data.read() == b"hello from the hook"


def test_secure_extra_that_is_not_a_boolean_is_refused(monkeypatch) -> None:
    _set_connection(monkeypatch, "minio_odd", host="minio.data:9000", extra={"secure": "maybe"})
    with pytest.raises(StorageConfigError, match="extra 'secure' must be true or false"):
        S3StorageHook(s3_conn_id="minio_odd").get_settings()


def test_job_env_gives_a_ray_job_the_same_settings(monkeypatch) -> None:
    _set_connection(
        monkeypatch, "minio_job", host="http://minio.data:9000", login="ak", password="sk", extra={"region": "eu-west-3"}
    )
    hook = S3StorageHook(s3_conn_id="minio_job")
    env = hook.job_env()
    assert env == {
        "RAYOPS_S3_ENDPOINT_URL": "http://minio.data:9000",
        "MLFLOW_S3_ENDPOINT_URL": "http://minio.data:9000",
        "AWS_ACCESS_KEY_ID": "ak",
        "AWS_SECRET_ACCESS_KEY": "sk",
        "AWS_REGION": "eu-west-3",
    }
    assert S3Settings.from_env(env) == hook.get_settings()


def test_settings_from_the_hook_reach_the_bucket(s3_endpoint, monkeypatch) -> None:
    _set_connection(
        monkeypatch,
        "moto",
        host=s3_endpoint.endpoint_url,
        login=s3_endpoint.access_key,
        password=s3_endpoint.secret_key,
    )
    hook = S3StorageHook(s3_conn_id="moto")
    uri = f"s3://{S3_BUCKET}/hook/obj.txt"
    storage.write_bytes(uri, b"through the hook", settings=hook.get_settings())
    assert storage.read_bytes(uri, settings=S3Settings.from_env(hook.job_env())) == b"through the hook"
    ok, message = hook.test_connection()
    assert ok is True
    assert message.endswith("bucket(s) visible")
    assert int(message.split()[0]) >= 1  # the session's bucket, listed through pyarrow


def test_test_connection_failure_names_the_endpoint_and_keeps_the_secret_out(monkeypatch) -> None:
    # Nothing listens on port 9: pyarrow's own connection error, mapped and shown.
    _set_connection(monkeypatch, "dead", host="http://127.0.0.1:9", login="ak-dead", password="very-secret-key")
    ok, message = S3StorageHook(s3_conn_id="dead").test_connection()
    assert ok is False
    assert message.startswith("cannot list buckets at http://127.0.0.1:9: S3 error NETWORK_CONNECTION during ListBuckets")
    assert "very-secret-key" not in message
    assert "ak-dead" not in message


def test_test_connection_without_pyarrow_names_the_extra_to_install(monkeypatch) -> None:
    # The core install (the Airflow side) has no pyarrow; tests/test_packaging.py checks it there for real.
    _set_connection(monkeypatch, "no_arrow", host="http://127.0.0.1:9")
    monkeypatch.setitem(sys.modules, "pyarrow.fs", None)  # `import pyarrow.fs` raises ImportError
    ok, message = S3StorageHook(s3_conn_id="no_arrow").test_connection()
    assert ok is False
    assert "pip install 'airflow-provider-rayops[jobs]'" in message


def test_test_connection_reports_a_connection_it_cannot_use(monkeypatch) -> None:
    _set_connection(monkeypatch, "odd", host="minio.data:9000", extra={"secure": "maybe"})
    ok, message = S3StorageHook(s3_conn_id="odd").test_connection()
    assert ok is False
    assert "extra 'secure' must be true or false" in message


def test_ui_relabels_fields_in_storage_terms() -> None:
    behaviour = S3StorageHook.get_ui_field_behaviour()
    assert behaviour["relabeling"] == {"host": "Endpoint URL", "login": "Access key", "password": "Secret key"}
    assert "schema" in behaviour["hidden_fields"]
