from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    """A project folder with the shipped defaults.yaml and nothing else."""
    folder = tmp_path / "dag_configs"
    folder.mkdir()
    shutil.copy(ROOT / "dag_configs" / "defaults.yaml", folder / "defaults.yaml")
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
