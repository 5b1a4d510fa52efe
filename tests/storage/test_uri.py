"""What `file://` and `s3://` URIs mean, and how bad ones are refused."""

from __future__ import annotations

import pytest

from airflow_provider_rayops.storage import InvalidURIError, StorageURI, join_uri, parse_uri, resolve_uri


def test_relative_file_uri_resolves_against_the_base_dir() -> None:
    assert resolve_uri("file://data/churn.parquet", base_dir="/srv/pipelines") == "file:///srv/pipelines/data/churn.parquet"


def test_relative_file_uri_resolves_against_the_cwd_by_default(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert resolve_uri("file://data/x.csv") == f"file://{tmp_path}/data/x.csv"


def test_absolute_file_uri_ignores_the_base_dir() -> None:
    assert resolve_uri("file:///abs/x.csv", base_dir="/elsewhere") == "file:///abs/x.csv"


def test_s3_uri_splits_into_bucket_and_key() -> None:
    assert parse_uri("s3://models/churn/v1/model.pt") == StorageURI("s3", "models", "churn/v1/model.pt")
    assert parse_uri("s3://models") == StorageURI("s3", "models", "")


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("ftp://host/x", "unknown scheme 'ftp'"),
        ("data/churn.parquet", "not a URI"),
        ("s3:///key", "missing bucket"),
        ("s3://", "missing bucket"),
        ("s3://My_Bucket/key", "invalid bucket name 'My_Bucket'"),
        ("s3://bucket/a//b", "empty, '.' or '..' segment"),
        ("s3://bucket/a/../b", "empty, '.' or '..' segment"),
        ("file://", "missing path"),
    ],
)
def test_bad_uri_names_itself_the_problem_and_the_expected_form(uri: str, problem: str) -> None:
    with pytest.raises(InvalidURIError) as err:
        parse_uri(uri)
    message = str(err.value)
    assert message.startswith(f"{uri}: ")
    assert problem in message
    assert "expected file:///absolute/path, file://relative/path or s3://bucket/key" in message
    assert err.value.uri == uri


def test_invalid_uri_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_uri("gs://bucket/x")


def test_join_uri_appends_segments_once() -> None:
    assert join_uri("s3://b/snaps/", "abc", "/train.parquet") == "s3://b/snaps/abc/train.parquet"
    assert join_uri("file:///", "tmp") == "file:///tmp"
