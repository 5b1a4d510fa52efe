"""The factory's lifecycle DAG end to end: YAML -> Airflow -> Ray jobs -> storage and MLflow.

Real parts only: Airflow's dag.test(), moto's S3 server on 127.0.0.1 for every artifact the
pipeline writes, a real MLflow tracking server, and an existing Ray cluster that has never seen
rayops (tests/fixtures/bare_cluster.py: its Python lacks this package and Airflow), reached
through a rayops_ray connection with `code: ship`, so every stage is sent rayops' job code.
The embedded head's path runs in test_production_path.py and `make demo`.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from airflow_provider_rayops import storage
from airflow_provider_rayops.backends import cluster_code
from airflow_provider_rayops.config.loader import load_config_dir
from airflow_provider_rayops.factory import load_pipelines
from airflow_provider_rayops.jobs.datasets import make_churn, table_bytes
from tests.fixtures.airflow_db import run_dag_test
from tests.fixtures.bare_cluster import BARE_CONN_ID
from tests.fixtures.configs import write_defaults
from tests.fixtures.s3 import S3_BUCKET

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def pipeline_dag(tmp_path, monkeypatch, bare_cluster, s3_endpoint, mlflow_server, airflow_db):
    settings = s3_endpoint
    monkeypatch.setenv(
        "AIRFLOW_CONN_RAYOPS_S3_TEST",
        json.dumps(
            {
                "conn_type": "rayops_s3",
                "host": settings.endpoint_url,
                "login": settings.access_key,
                "password": settings.secret_key,
                "extra": {"region": settings.region},
            }
        ),
    )
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_TEST", json.dumps({"conn_type": "rayops_mlflow", "host": mlflow_server}))
    monkeypatch.setenv(f"AIRFLOW_CONN_{BARE_CONN_ID.upper()}", bare_cluster.connection())
    prefix = f"s3://{S3_BUCKET}/lifecycle-{tmp_path.name}"
    storage.write_bytes(f"{prefix}/raw/churn.parquet", table_bytes(make_churn(3000, seed=3), fmt="parquet"))
    configs = tmp_path / "dag_configs"
    configs.mkdir()
    # The platform lets pipelines write to the test bucket.
    write_defaults(configs, security={"storage_roots": [f"s3://{S3_BUCKET}/"]})
    compute = json.dumps({"backend": "ray", "conn_id": BARE_CONN_ID, "code": "ship"})
    (configs / "churn_it.yaml").write_text(
        textwrap.dedent(
            f"""
            pipeline: churn_it
            compute: bare
            compute_profiles:
              bare: {compute}
            storage: {{root: "{prefix}/artifacts", conn_id: rayops_s3_test}}
            tracking: {{conn_id: mlflow_test, experiment: "churn-it {{{{ 7 * 7 }}}}"}}
            data: {{source: "{prefix}/raw/churn.parquet", target: churned, min_rows: 1000}}
            train:
              entrypoint: rayops.builtin:tabular_mlp
              params: {{epochs: 3, lr: 0.01, batch_size: 128}}
              checkpoint: {{every_epochs: 1, keep: 2}}
            evaluate:
              metrics: [accuracy, auc]
              gates:
                - {{metric: auc, min: 0.6}}
                - {{metric: auc, min_gain_over_champion: 0.0}}
                - {{per_class: recall, min: 0.05}}
            promote: {{registered_model: churn-it}}
            """
        )
    )
    dags = load_pipelines(config_dir=configs)
    assert sorted(dags) == ["churn_it"]
    return dags["churn_it"], prefix, mlflow_server, configs


def test_lifecycle_dag_runs_ingest_train_evaluate_on_ray_with_s3_and_mlflow(pipeline_dag, capfd):
    dag, prefix, tracking_uri, configs = pipeline_dag
    run = run_dag_test(dag, run_conf={"epochs": 2})
    out = capfd.readouterr().out
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {
        "ingest.snapshot": "success",
        "train.fit": "success",
        "evaluate.score": "success",
        "promote.register": "success",
        "promote.champion": "success",
    }, out[-3000:]
    # Every Ray stage was sent the job code; the first upload put it on the cluster, the others found it there.
    shipped = [line for line in out.splitlines() if "shipping airflow-provider-rayops" in line]
    assert len(shipped) == 3, shipped
    assert all("(already on the cluster)" in line for line in shipped[1:]), shipped
    assert {line.split(" as ")[1].split()[0] for line in shipped} == {cluster_code.rayops_package().uri}

    xcom = {ti.task_id: ti.xcom_pull(task_ids=ti.task_id) for ti in run.get_task_instances()}
    snapshot = xcom["ingest.snapshot"]
    assert snapshot["snapshot_uri"].startswith(f"{prefix}/artifacts/snapshots/churn_it/")
    assert storage.read_manifest(snapshot["snapshot_uri"])["rows"]["total"] == 3000

    trained = xcom["train.fit"]
    assert trained["epochs_completed"] == 2  # the Param given at trigger time won over the YAML's 3
    assert trained["checkpoint_uri"].startswith(f"{prefix}/artifacts/runs/churn_it/")

    evaluated = xcom["evaluate.score"]
    assert evaluated["mlflow_run_id"] == trained["mlflow_run_id"]
    assert evaluated["snapshot_uri"] == snapshot["snapshot_uri"]
    assert evaluated["metrics"]["auc"] > 0.6
    assert evaluated["champion"] is None

    from mlflow import MlflowClient

    mlflow_run = MlflowClient(tracking_uri=tracking_uri).get_run(trained["mlflow_run_id"])
    tags = mlflow_run.data.tags
    assert tags["rayops.dag_id"] == "churn_it"
    assert tags["rayops.run_id"] == run.run_id
    assert tags["rayops.snapshot_uri"] == snapshot["snapshot_uri"]
    (loaded,) = load_config_dir(configs).pipelines
    assert tags["rayops.config_hash"] == loaded.config_hash
    train_ti = next(ti for ti in run.get_task_instances() if ti.task_id == "train.fit")
    assert tags["rayops.ray_job_id"] == train_ti.xcom_pull(task_ids="train.fit", key="ray_job")["submission_id"]
    assert mlflow_run.data.metrics["eval_auc"] == pytest.approx(evaluated["metrics"]["auc"])
    # Config text reached the job as data: the experiment is named as written, not rendered to "churn-it 49".
    experiment = MlflowClient(tracking_uri=tracking_uri).get_experiment(mlflow_run.info.experiment_id)
    assert experiment.name == "churn-it {{ 7 * 7 }}"

    # The audit question, from MLflow alone: why is this version serving?
    registered = xcom["promote.register"]
    assert registered["passed"] is True and registered["version"] == "1"
    client = MlflowClient(tracking_uri=tracking_uri)
    champion = client.get_model_version_by_alias("churn-it", "champion")
    assert champion.version == "1" and champion.run_id == trained["mlflow_run_id"]
    version_tags = champion.tags
    assert version_tags["rayops.snapshot_uri"] == snapshot["snapshot_uri"]
    assert version_tags["rayops.config_hash"] == tags["rayops.config_hash"]
    assert version_tags["rayops.run_id"] == run.run_id
    assert version_tags["rayops.gates_passed"] == "true"
    assert version_tags["rayops.approval"] == "policy"  # no person was asked: the gate policy approved
    assert "no champion" in version_tags["rayops.gate.1"]  # a first model passes the gain gate by rule
