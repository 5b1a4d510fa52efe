"""Airflow DAG file: every pipeline YAML in dag_configs/ becomes a DAG here.

Set RAYOPS_CONFIG_DIR to read configs from elsewhere (e.g. a git-synced folder).
"""

from pathlib import Path

from airflow_provider_rayops.factory import load_pipelines

load_pipelines(globals(), default_config_dir=Path(__file__).resolve().parent.parent / "dag_configs")
