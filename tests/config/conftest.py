from __future__ import annotations

import re
import shutil
import textwrap
from pathlib import Path

import pytest

from tests.fixtures.configs import write_defaults

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A project folder with the shipped defaults.yaml and nothing else, less its security section:
    the policy tests write their own, starting from rayops' defaults."""
    folder = tmp_path / "dag_configs"
    folder.mkdir()
    write_defaults(folder)
    return folder


@pytest.fixture
def write(config_dir: Path):
    def _write(name: str, text: str) -> Path:
        path = config_dir / name
        path.write_text(textwrap.dedent(text).lstrip("\n"))
        return path

    return _write


MINIMAL = """
pipeline: churn
data:
  source: file://data/churn.parquet
  target: churned
"""


def load(path: Path, env: dict[str, str] | None = None):
    """Validate one pipeline file over its folder's defaults.yaml, in the given environment."""
    from airflow_provider_rayops.config.loader import load_defaults, load_pipeline

    return load_pipeline(path, defaults=load_defaults(path.parent, env=env or {}), env=env or {})


def errors_of(path: Path, env: dict[str, str] | None = None) -> list[str]:
    """Every error of one pipeline file, as `rayops validate` prints them."""
    from airflow_provider_rayops.config.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(str(path.parent))) as info:  # each issue names its file
        load(path, env)
    return [str(i) for i in info.value.issues]


# Counted by tests/config/test_config_fuzz.py, printed at the end of every run.
FUZZ_STATS = {"cases": 0, "valid": 0, "errors": 0}


def pytest_terminal_summary(terminalreporter):
    """How many cases the config fuzz test tried, in every run's output."""
    if FUZZ_STATS["cases"]:
        terminalreporter.write_line(
            f"config fuzz: {FUZZ_STATS['cases']} cases, {FUZZ_STATS['valid']} valid, {FUZZ_STATS['errors']} located errors"
        )
