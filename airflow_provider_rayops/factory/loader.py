"""`load_pipelines`: the one call a dags-folder file makes."""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from airflow_provider_rayops.config.cache import load_config_dir_cached
from airflow_provider_rayops.config.errors import ConfigError, ConfigIssue
from airflow_provider_rayops.config.loader import ConfigDirResult


def config_dir_from_env(default: Path | None = None) -> Path:
    """RAYOPS_CONFIG_DIR wins; else the given default; else ./dag_configs."""
    if os.environ.get("RAYOPS_CONFIG_DIR"):
        return Path(os.environ["RAYOPS_CONFIG_DIR"])
    return default if default is not None else Path("dag_configs")


def load_pipelines(
    namespace: MutableMapping[str, Any] | None = None,
    *,
    config_dir: str | Path | None = None,
    default_config_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Build a DAG for every pipeline YAML in the config folder (and its `<pipeline>__rollback`
    DAG when it deploys, its `<pipeline>__monitor` DAG when it monitors) and put them in
    `namespace` (pass `globals()` from a DAG file). A file that fails validation becomes a visible
    `broken__<file>` DAG carrying its errors; it never hides the other pipelines.

    Returns the DAGs by dag_id.
    """
    from airflow_provider_rayops.factory.dags import build_broken_dag, build_monitor_dag, build_pipeline_dag, build_rollback_dag

    folder = (
        Path(config_dir)
        if config_dir is not None
        else config_dir_from_env(Path(default_config_dir) if default_config_dir is not None else None)
    )
    try:
        result = load_config_dir_cached(folder)
    except Exception as exc:  # never expected (each file's problems are its own errors); never fatal either
        issue = ConfigIssue(str(folder), 1, 1, "", f"reading the config folder failed: {type(exc).__name__}: {exc}")
        result = ConfigDirResult(pipelines=[], errors={str(folder): ConfigError([issue])})
    dags: dict[str, Any] = {}
    for loaded in result.pipelines:
        try:
            built = [build_pipeline_dag(loaded), build_rollback_dag(loaded), build_monitor_dag(loaded)]
        except Exception as exc:  # a factory bug must not take the other pipelines down with it
            built = [
                build_broken_dag(
                    loaded.file,
                    ConfigError([ConfigIssue(loaded.file, 1, 1, "", f"building the DAG failed: {type(exc).__name__}: {exc}")]),
                )
            ]
        for dag in built:
            if dag is not None:
                dags[dag.dag_id] = dag
    for file, error in result.errors.items():
        dag = build_broken_dag(file, error)
        dags[dag.dag_id] = dag
    if namespace is not None:
        namespace.update(dags)
    return dags
