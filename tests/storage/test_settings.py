"""S3Settings: from the environment a Ray job gets, and never showing a secret."""

from __future__ import annotations

import pytest

from airflow_provider_rayops.storage import S3Settings, StorageConfigError

ENV = {
    "RAYOPS_S3_ENDPOINT_URL": "http://minio.data:9000",
    "AWS_ACCESS_KEY_ID": "AKIA-visible-nowhere",
    "AWS_SECRET_ACCESS_KEY": "s3cr3t-visible-nowhere",
    "AWS_REGION": "eu-west-1",
}


def test_from_env_reads_endpoint_credentials_and_region() -> None:
    settings = S3Settings.from_env(ENV)
    assert settings == S3Settings(
        endpoint_url="http://minio.data:9000",
        access_key="AKIA-visible-nowhere",
        secret_key="s3cr3t-visible-nowhere",
        region="eu-west-1",
    )
    assert settings.secure is False
    assert settings.endpoint == "minio.data:9000"


def test_region_falls_back_to_aws_default_region_then_us_east_1() -> None:
    assert S3Settings.from_env({"AWS_DEFAULT_REGION": "ap-south-1"}).region == "ap-south-1"
    assert S3Settings.from_env({}).region == "us-east-1"


def test_no_endpoint_means_aws_s3_over_https() -> None:
    settings = S3Settings.from_env({})
    assert settings.endpoint_url is None
    assert settings.endpoint == "s3.amazonaws.com"
    assert settings.secure is True


def test_to_env_round_trips_through_from_env() -> None:
    settings = S3Settings.from_env(ENV)
    env = settings.to_env()
    assert S3Settings.from_env(env) == settings
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://minio.data:9000"


@pytest.mark.parametrize(
    ("secure", "expected"), [(None, "https://minio:9000"), (True, "https://minio:9000"), (False, "http://minio:9000")]
)
def test_bare_host_port_takes_its_scheme_from_secure(secure: bool | None, expected: str) -> None:
    assert S3Settings(endpoint_url="minio:9000", secure=secure).endpoint_url == expected


def test_secure_contradicting_the_scheme_is_refused() -> None:
    with pytest.raises(StorageConfigError, match="secure=True contradicts the URL scheme 'http'"):
        S3Settings(endpoint_url="http://minio:9000", secure=True)


def test_endpoint_with_credentials_or_path_is_refused_without_echoing_them() -> None:
    with pytest.raises(StorageConfigError) as err:
        S3Settings(endpoint_url="http://user:s3cr3t@minio:9000/bucket")
    assert "s3cr3t" not in str(err.value)
    assert "user" not in str(err.value)


def test_repr_and_str_keep_keys_out() -> None:
    settings = S3Settings.from_env(ENV)
    for text in (repr(settings), str(settings)):
        assert "s3cr3t" not in text
        assert "AKIA" not in text
        assert "minio.data:9000" in text
