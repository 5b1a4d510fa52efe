"""Where `s3://` URIs live: endpoint, credentials and region of an S3 service (MinIO in production).

Settings never come from pipeline YAML. In Airflow they come from a `rayops_s3` connection
(`S3StorageHook.get_settings()`); inside a Ray job they come from the environment the
hook's `job_env()` gave the job (`S3Settings.from_env()`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from airflow_provider_rayops.storage.uri import StorageConfigError

ENV_ENDPOINT_URL = "RAYOPS_S3_ENDPOINT_URL"
ENV_ACCESS_KEY = "AWS_ACCESS_KEY_ID"
ENV_SECRET_KEY = "AWS_SECRET_ACCESS_KEY"
ENV_REGION = "AWS_REGION"
# MLflow's S3 artifact store reads its endpoint from here; a job logging to MLflow on MinIO needs it.
ENV_MLFLOW_ENDPOINT_URL = "MLFLOW_S3_ENDPOINT_URL"
DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class S3Settings:
    """Endpoint and credentials for `s3://` URIs.

    `endpoint_url` is `http(s)://host:port` (MinIO) or None for AWS S3. A bare `host:port`
    is accepted and gets its scheme from `secure` (default https). After construction
    `endpoint_url` always carries a scheme and `secure` always says whether it is https;
    a `secure` that contradicts the URL's scheme is an error. Keys are left out of repr.
    """

    endpoint_url: str | None = None
    access_key: str | None = field(default=None, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    region: str = DEFAULT_REGION
    secure: bool | None = None

    def __post_init__(self) -> None:
        region = self.region or DEFAULT_REGION
        object.__setattr__(self, "region", region)
        if self.endpoint_url is None:
            if self.secure is False:
                raise StorageConfigError("s3 settings", "secure=False needs an endpoint_url (AWS S3 is https only)")
            object.__setattr__(self, "secure", True)
            return
        raw = self.endpoint_url.strip().rstrip("/")
        if "://" not in raw:
            raw = f"{'http' if self.secure is False else 'https'}://{raw}"
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise StorageConfigError(
                f"endpoint {parts.scheme}://{parts.hostname or ''}", "endpoint_url must be http(s)://host[:port]"
            )
        if parts.path or parts.query or parts.fragment or parts.username or parts.password:
            # Never echo the raw URL: someone may have put credentials in it.
            raise StorageConfigError(
                f"endpoint {parts.scheme}://{parts.hostname}", "endpoint_url must be http(s)://host[:port], nothing more"
            )
        secure = parts.scheme == "https"
        if self.secure is not None and self.secure != secure:
            raise StorageConfigError(
                f"endpoint {parts.scheme}://{parts.netloc}", f"secure={self.secure} contradicts the URL scheme {parts.scheme!r}"
            )
        object.__setattr__(self, "endpoint_url", f"{parts.scheme}://{parts.netloc}")
        object.__setattr__(self, "secure", secure)

    @property
    def endpoint(self) -> str:
        """`host:port` of the service, the form pyarrow's `endpoint_override` takes."""
        if self.endpoint_url is None:
            return "s3.amazonaws.com"
        return urlsplit(self.endpoint_url).netloc

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> S3Settings:
        """Settings from RAYOPS_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION.

        AWS_DEFAULT_REGION is the fallback for the region; empty variables count as unset.
        """
        env = os.environ if environ is None else environ
        return cls(
            endpoint_url=env.get(ENV_ENDPOINT_URL) or None,
            access_key=env.get(ENV_ACCESS_KEY) or None,
            secret_key=env.get(ENV_SECRET_KEY) or None,
            region=env.get(ENV_REGION) or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION,
        )

    def to_env(self) -> dict[str, str]:
        """The environment variables that make `from_env()` return these settings (secrets included)."""
        env = {ENV_REGION: self.region}
        if self.endpoint_url:
            env[ENV_ENDPOINT_URL] = self.endpoint_url
            env[ENV_MLFLOW_ENDPOINT_URL] = self.endpoint_url
        if self.access_key:
            env[ENV_ACCESS_KEY] = self.access_key
        if self.secret_key:
            env[ENV_SECRET_KEY] = self.secret_key
        return env
