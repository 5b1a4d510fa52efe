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


def test_a_changed_defaults_file_invalidates_every_pipeline(write, config_dir, tmp_path, counted_validations):
    """defaults.yaml is part of every pipeline's key: a changed default reaches each of them."""
    write("a.yaml", MINIMAL)
    write("b.yaml", MINIMAL.replace("churn", "fraud"))
    first = load_config_dir_cached(config_dir, cache_dir=tmp_path / "cache", env={})
    defaults = config_dir / "defaults.yaml"
    assert "owner: ml-platform" in defaults.read_text()
    defaults.write_text(defaults.read_text().replace("owner: ml-platform", "owner: fraud-team"))
    second = load_config_dir_cached(config_dir, cache_dir=tmp_path / "cache", env={})
    assert counted_validations == ["a.yaml", "b.yaml", "a.yaml", "b.yaml"]
    assert [p.spec.owner for p in first.pipelines] == ["ml-platform", "ml-platform"]
    assert [p.spec.owner for p in second.pipelines] == ["fraud-team", "fraud-team"]


def test_an_entry_written_by_other_loader_code_is_not_trusted(write, config_dir, tmp_path, counted_validations, monkeypatch):
    """A new validation rule must not be hidden by an entry an older rayops cached: the key holds
    a hash of the config plane's own source, so other code means other keys."""
    write("a.yaml", MINIMAL)
    load_config_dir_cached(config_dir, cache_dir=tmp_path / "cache", env={})
    monkeypatch.setattr(cache_module, "loader_code_hash", lambda: "code-of-another-release")
    load_config_dir_cached(config_dir, cache_dir=tmp_path / "cache", env={})
    assert counted_validations == ["a.yaml", "a.yaml"]
