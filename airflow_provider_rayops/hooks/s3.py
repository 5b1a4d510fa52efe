"""The `rayops_s3` connection: where `s3://` URIs live (MinIO in production, any S3 service).

Fields: host = endpoint URL (`http://minio.data:9000`; empty for AWS S3), login = access
key, password = secret key, extra = `{"region": "us-east-1", "secure": false}`. `secure`
only matters when the host carries no scheme (`minio.data` with port 9000).

The hook turns the connection into `S3Settings` for code running in Airflow, and into the
environment variables (`job_env()`) through which a Ray job's `S3Settings.from_env()` gets
the same settings. Credentials never appear in pipeline YAML.
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook

from airflow_provider_rayops.hooks import checked, connection_url
from airflow_provider_rayops.storage import S3Settings, StorageConfigError, StorageError
from airflow_provider_rayops.storage.ops import _list_buckets
from airflow_provider_rayops.storage.settings import DEFAULT_REGION

if TYPE_CHECKING:
    import pyarrow.fs

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


class S3StorageHook(BaseHook):
    """Reads a `rayops_s3` connection; gives `S3Settings`, a filesystem on it, and the env vars a Ray job needs.

    :param s3_conn_id: the connection; None (the operators' default too) means no connection:
        settings from this process's environment (`S3Settings.from_env()`), nothing handed to jobs.
    """

    conn_name_attr = "s3_conn_id"
    default_conn_name = "rayops_s3_default"
    conn_type = "rayops_s3"
    hook_name = "S3 / MinIO storage (rayops)"

    def __init__(self, s3_conn_id: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.s3_conn_id = s3_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden_fields": ["schema"],
            "relabeling": {"host": "Endpoint URL", "login": "Access key", "password": "Secret key"},
            "placeholders": {
                "host": "http://minio.data:9000 (empty for AWS S3)",
                "port": "only when the endpoint URL has none",
                "login": "access key id",
                "password": "secret access key",
                "extra": json.dumps({"region": DEFAULT_REGION, "secure": True}),
            },
        }

    def get_settings(self) -> S3Settings:
        """The connection as `S3Settings`; StorageConfigError if its endpoint cannot work."""
        if self.s3_conn_id is None:
            return S3Settings.from_env()
        conn = checked(self.get_connection(self.s3_conn_id), conn_id=self.s3_conn_id, conn_type=self.conn_type)
        extra = conn.extra_dejson or {}
        return S3Settings(
            endpoint_url=connection_url(conn.host, conn.port, default_scheme=None),
            access_key=conn.login or None,
            secret_key=conn.password or None,
            region=str(extra.get("region") or DEFAULT_REGION),
            secure=_as_bool(extra.get("secure"), conn_id=self.s3_conn_id),
        )

    def job_env(self, *, credentials: bool = True) -> dict[str, str]:
        """Environment variables that give a Ray job these settings through `S3Settings.from_env()`.

        They hold the secret key: pass them as the job's runtime_env env_vars, never log them.
        `credentials=False` leaves the keys out (the job's pods have their own: kuberay's secret_env).
        Without a connection there is nothing to hand over: the job reads its own environment.
        """
        if self.s3_conn_id is None:
            return {}
        settings = self.get_settings()
        if not credentials:
            settings = dataclasses.replace(settings, access_key=None, secret_key=None)
        return settings.to_env()

    def get_conn(self) -> pyarrow.fs.S3FileSystem:
        """pyarrow's S3 filesystem on these settings, as storage/ builds it (timeouts included).

        pyarrow comes with the `jobs` extra, not the core install; ImportError without it.
        """
        from airflow_provider_rayops.storage.ops import s3_filesystem

        return s3_filesystem(self.get_settings())

    def test_connection(self) -> tuple[bool, str]:
        """List the buckets the credentials can see (the UI's Test button), through pyarrow's S3 filesystem.

        pyarrow is not part of the core install (the Airflow side) and is imported only when the
        test runs; without it the test says which extra brings it instead of failing on an import.
        """
        try:
            settings = self.get_settings()
        except StorageError as exc:
            return False, str(exc)
        except Exception as exc:  # the UI shows the message; keep it free of secrets
            return False, f"cannot read the connection {self.s3_conn_id}: {type(exc).__name__}"
        where = settings.endpoint_url or "AWS S3"
        try:
            buckets = _list_buckets(settings)
        except ImportError:
            return False, (
                "testing an S3 connection needs pyarrow (with S3 support), which the core install leaves out: "
                "pip install 'airflow-provider-rayops[jobs]' (or pyarrow alone) where Airflow runs"
            )
        except StorageError as exc:  # its problem text is free of keys and request ids
            return False, f"cannot list buckets at {where}: {exc.problem}"
        except Exception as exc:  # the UI shows the message; keep it free of secrets
            return False, f"cannot list buckets at {where}: {type(exc).__name__}"
        return True, f"{len(buckets)} bucket(s) visible"


def _as_bool(value: Any, *, conn_id: str) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise StorageConfigError(f"connection {conn_id}", f"extra 'secure' must be true or false, got {value!r}")
