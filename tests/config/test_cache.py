"""Unchanged pipeline files are not re-validated on every parse loop."""

from __future__ import annotations

import pytest

from airflow_provider_rayops.config import cache as cache_module
from airflow_provider_rayops.config.cache import load_config_dir_cached

from .conftest import MINIMAL


@pytest.fixture
def counted_validations(monkeypatch):
    """Counts calls of the real validator (it still runs)."""
    calls: list[str] = []
    real = cache_module.load_pipeline

    def counting(path, **kwargs):
        calls.append(path.name)
        return real(path, **kwargs)

    monkeypatch.setattr(cache_module, "load_pipeline", counting)
    return calls


def test_second_load_of_unchanged_files_validates_nothing(write, config_dir, tmp_path, counted_validations):
    write("a.yaml", MINIMAL)
    write("b.yaml", MINIMAL.replace("churn", "fraud"))
    first = load_config_dir_cached(config_dir, cache_dir=tmp_path / "cache", env={})
    second = load_config_dir_cached(config_dir, cache_dir=tmp_path / "cache", env={})
    assert counted_validations == ["a.yaml", "b.yaml"]
    assert [p.spec for p in second.pipelines] == [p.spec for p in first.pipelines]
    assert [p.config_hash for p in second.pipelines] == [p.config_hash for p in first.pipelines]


def test_a_changed_file_is_validated_again_and_only_it(write, config_dir, tmp_path, counted_validations):
    write("a.yaml", MINIMAL)
    write("b.yaml", MINIMAL.replace("churn", "fraud"))
    load_config_dir_cached(config_dir, cache_dir=tmp_path / "cache", env={})
    write("b.yaml", MINIMAL.replace("churn", "fraud") + "schedule: '@daily'\n")
    result = load_config_dir_cached(config_dir, cache_dir=tmp_path / "cache", env={})
    assert counted_validations == ["a.yaml", "b.yaml", "b.yaml"]
    assert result.pipelines[1].spec.schedule == "@daily"


def test_a_changed_environment_variable_invalidates_the_files_using_it(write, config_dir, tmp_path, counted_validations):
    write("a.yaml", MINIMAL.replace("file://data/churn.parquet", "file://${RAYOPS_DATA}/churn.parquet"))
    first = load_config_dir_cached(config_dir, cache_dir=tmp_path / "cache", env={"RAYOPS_DATA": "one"})
    second = load_config_dir_cached(config_dir, cache_dir=tmp_path / "cache", env={"RAYOPS_DATA": "two"})
    assert first.pipelines[0].spec.data.source == f"file://{config_dir.parent.resolve()}/one/churn.parquet"
    assert second.pipelines[0].spec.data.source == f"file://{config_dir.parent.resolve()}/two/churn.parquet"
    assert len(counted_validations) == 2


def test_errors_are_cached_too_and_still_reported(write, config_dir, tmp_path, counted_validations):
    bad = write("bad.yaml", "pipeline: x\n")
    first = load_config_dir_cached(config_dir, cache_dir=tmp_path / "cache", env={})
    second = load_config_dir_cached(config_dir, cache_dir=tmp_path / "cache", env={})
    assert str(second.errors[str(bad)]) == str(first.errors[str(bad)])
    assert str(bad) + ":1:1: data: required key missing" in str(second.errors[str(bad)])
    assert counted_validations == ["bad.yaml"]


def test_a_corrupt_cache_file_is_ignored(write, config_dir, tmp_path):
    write("a.yaml", MINIMAL)
    load_config_dir_cached(config_dir, cache_dir=tmp_path / "cache", env={})
    for f in (tmp_path / "cache").iterdir():
        f.write_text("{not json")
    result = load_config_dir_cached(config_dir, cache_dir=tmp_path / "cache", env={})
    assert [p.spec.pipeline for p in result.pipelines] == ["churn"]
