"""Pipelines on a Ray cluster that has never seen rayops (tests/fixtures/bare_cluster.py).

The cluster's Python has Ray, torch, pyarrow and MLflow, but neither this package nor Airflow,
and it is reached only through a rayops_ray connection, as a team's existing cluster is. With
`code: auto` a pipeline whose training loop lives in the project folder runs end to end: the
probe finds no rayops there, so each job is sent rayops' job code and the pipeline's module.
With `code: image` the first task fails at once, without a retry, saying what is missing and
which key fixes it. (The example pipeline with `code: ship` runs there in test_lifecycle_dag.py.)
Artifacts go to moto's S3 server and runs to a real MLflow server, both on 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from airflow_provider_rayops import storage
from airflow_provider_rayops.backends import cluster_code
from airflow_provider_rayops.factory import load_pipelines
from airflow_provider_rayops.jobs.datasets import make_churn, table_bytes
from tests.fixtures.airflow_db import run_dag_test
from tests.fixtures.bare_cluster import BARE_CONN_ID
from tests.fixtures.configs import write_defaults
from tests.fixtures.s3 import S3_BUCKET

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("ingest.snapshot", "train.fit", "evaluate.score", "promote.register", "promote.champion")

CUSTOM_LOOP = '''\
"""A team's own training loop, kept in the project: the built-in model, trained by this code."""

import json
import os
import sys
from pathlib import Path

from airflow_provider_rayops.jobs import builtin


def train(config):
    params = dict(config["params"])
    ran = {"python": sys.executable, "omp": os.environ.get("OMP_NUM_THREADS")}  # where, and with what
    Path(params.pop("ran_marker")).write_text(json.dumps(ran))
    return builtin.tabular_mlp({**config, "params": params})
'''


@pytest.fixture(scope="module")
def bare_project(tmp_path_factory, bare_cluster, s3_endpoint, mlflow_server, airflow_db):
    """A project folder whose pipelines run on the bare cluster, one per `code:` mode."""
    project = tmp_path_factory.mktemp("bare-project")
    prefix = f"s3://{S3_BUCKET}/bare-{project.name}"
    storage.write_bytes(f"{prefix}/raw/churn.parquet", table_bytes(make_churn(2000, seed=3), fmt="parquet"))
    configs = project / "dag_configs"
    configs.mkdir()
    write_defaults(configs, security={"storage_roots": [f"s3://{S3_BUCKET}/"]})
    (project / "myloops").mkdir()
    (project / "myloops" / "__init__.py").write_text("")
    (project / "myloops" / "loop.py").write_text(CUSTOM_LOOP)
    (project / "myloops" / ".env").write_text("API_KEY=never-shipped\n")  # a secret beside the code
    marker = project / "custom-loop-ran"
    for name, mode, entrypoint, params in (
        ("bare_auto", "auto", "myloops.loop:train", f"{{epochs: 2, lr: 0.01, batch_size: 128, ran_marker: '{marker}'}}"),
        ("bare_image", "image", "rayops.builtin:tabular_mlp", "{epochs: 1}"),
    ):
        (configs / f"{name}.yaml").write_text(
            textwrap.dedent(
                f"""
                pipeline: {name}
                compute: bare
                compute_profiles:
                  bare: {{backend: ray, conn_id: {BARE_CONN_ID}, code: {mode}}}
                retries: 2
                storage: {{root: "{prefix}/artifacts", conn_id: rayops_s3_test}}
                tracking: {{conn_id: mlflow_test}}
                data: {{source: "{prefix}/raw/churn.parquet", target: churned, min_rows: 1000}}
                train:
                  entrypoint: {entrypoint}
                  params: {params}
                evaluate:
                  metrics: [auc]
                  gates: [{{metric: auc, min: 0.55}}]
                promote: {{registered_model: {name}}}
                runtime_env:
                  env_vars: {{OMP_NUM_THREADS: 1}}
                """
            )
        )
    return project, marker


@pytest.fixture
def bare_dags(bare_project, bare_cluster, s3_endpoint, mlflow_server, monkeypatch, tmp_path):
    monkeypatch.setenv(f"AIRFLOW_CONN_{BARE_CONN_ID.upper()}", bare_cluster.connection())
    settings = s3_endpoint
    s3_conn = {"conn_type": "rayops_s3", "host": settings.endpoint_url, "login": settings.access_key,
               "password": settings.secret_key, "extra": {"region": settings.region}}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_RAYOPS_S3_TEST", json.dumps(s3_conn))
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_TEST", json.dumps({"conn_type": "rayops_mlflow", "host": mlflow_server}))
    monkeypatch.setenv("RAYOPS_HOME", str(tmp_path / "home"))  # a fresh probe cache: each test probes once
    project, _ = bare_project
    dags = load_pipelines(config_dir=project / "dag_configs")
    assert sorted(dags) == ["bare_auto", "bare_image"]
    return dags


def _states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def test_a_custom_loop_in_the_project_runs_there_with_code_auto(bare_dags, bare_project, bare_cluster, capfd):
    _, marker = bare_project
    run = run_dag_test(bare_dags["bare_auto"])
    out = capfd.readouterr().out
    assert _states(run) == dict.fromkeys(STAGES, "success"), out[-3000:]
    # The loop in the project folder ran, under the bare cluster's Python, with the pipeline's runtime_env.
    assert json.loads(marker.read_text()) == {"python": str(bare_cluster.python), "omp": "1"}
    # auto probed the cluster, found no rayops, and shipped it with the pipeline's module (without its .env).
    assert "shipping airflow-provider-rayops" in out
    module_lines = [line for line in out.splitlines() if "shipping module myloops of the pipeline: 2 files" in line]
    assert len(module_lines) == 3, [line for line in out.splitlines() if "shipping" in line]


def test_code_image_fails_the_first_task_at_once_saying_what_is_missing(bare_dags, capfd):
    run = run_dag_test(bare_dags["bare_image"])
    out = capfd.readouterr().out
    states = _states(run)
    assert states["ingest.snapshot"] == "failed", states
    ingest = next(ti for ti in run.get_task_instances() if ti.task_id == "ingest.snapshot")
    assert ingest.try_number == 1  # not retried (retries: 2): the same cluster would refuse again
    assert "airflow-provider-rayops is not installed on the cluster (this Airflow runs" in out
    assert "set compute_profiles.bare.code: auto (or ship)" in out
