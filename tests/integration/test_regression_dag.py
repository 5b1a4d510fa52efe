"""Regression end to end through the lifecycle DAG: a fractional target, no `train.task` written.

The delivery-times set (numbers, a string column and bool columns, with missing distances and
cities) goes through Airflow's dag.test() on the session's Ray head: ingest infers regression from
the target, the built-in model trains on the standardised target, evaluate scores it in minutes
(rmse, mae, r2), the gates judge rmse as a ceiling, and the champion in the real MLflow registry
predicts minutes. The pipeline's task is implied by its gate (`metric: rmse`).
"""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest

from airflow_provider_rayops import storage
from airflow_provider_rayops.factory import load_pipelines
from airflow_provider_rayops.jobs.datasets import make_delivery_times, table_bytes
from tests.fixtures.airflow_db import run_dag_test

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def delivery_dag(tmp_path, monkeypatch, ray_head, mlflow_server, airflow_db):
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_TEST", json.dumps({"conn_type": "rayops_mlflow", "host": mlflow_server}))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "delivery.csv").write_bytes(table_bytes(make_delivery_times(3000, seed=5), fmt="csv"))
    configs = tmp_path / "dag_configs"
    configs.mkdir()
    shutil.copy(ROOT / "dag_configs" / "defaults.yaml", configs)
    (configs / "delivery_it.yaml").write_text(
        textwrap.dedent(
            f"""
            pipeline: delivery_it
            compute_profiles:
              local: {json.dumps(ray_head.compute)}
            tracking: {{conn_id: mlflow_test}}
            data: {{source: file://data/delivery.csv, target: delivery_minutes, min_rows: 1000}}
            train:
              entrypoint: rayops.builtin:tabular_mlp
              params: {{epochs: 8, lr: 0.01, batch_size: 128, loss: huber}}
            evaluate:
              gates:
                - {{metric: rmse, max: 9.0}}
                - {{metric: r2, min: 0.6}}
                - {{metric: rmse, min_gain_over_champion: 0.0}}
            promote: {{registered_model: delivery-it}}
            """
        )
    )
    dags = load_pipelines(config_dir=configs)
    return dags["delivery_it"], mlflow_server


def test_a_continuous_target_trains_evaluates_and_becomes_a_champion_that_predicts_minutes(delivery_dag, capfd):
    dag, tracking_uri = delivery_dag
    run = run_dag_test(dag)
    out = capfd.readouterr().out
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert set(states.values()) == {"success"}, (states, out[-3000:])
    xcom = {ti.task_id: ti.xcom_pull(task_ids=ti.task_id) for ti in run.get_task_instances()}

    snapshot = xcom["ingest.snapshot"]
    assert snapshot["task"] == "regression"  # inferred: the target has fractional minutes
    manifest = storage.read_manifest(snapshot["snapshot_uri"])
    assert (manifest["task"], manifest["split"]["algorithm"], manifest["split"]["stratified_by"]) == (
        "regression",
        "permutation-v1",
        None,
    )

    trained = xcom["train.fit"]
    assert {"val_rmse", "val_mae", "val_r2", "val_loss"} <= set(trained["metrics"])
    assert "val_accuracy" not in trained["metrics"]

    evaluated = xcom["evaluate.score"]
    assert evaluated["task"] == "regression" and set(evaluated["metrics"]) == {"rmse", "mae", "r2"}
    assert evaluated["metrics"]["rmse"] < 9.0 and evaluated["metrics"]["r2"] > 0.6
    # The loop's last validation and the evaluate job measure the same model on the same rows.
    assert evaluated["metrics"]["rmse"] == pytest.approx(trained["metrics"]["val_rmse"], rel=1e-3)

    registered = xcom["promote.register"]
    assert registered["passed"] is True and registered["version"] == "1"

    from mlflow import MlflowClient

    from airflow_provider_rayops.jobs.modeling import load_predictor

    client = MlflowClient(tracking_uri=tracking_uri)
    assert client.get_model_version_by_alias("delivery-it", "champion").version == "1"
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    predictor = load_predictor("models:/delivery-it@champion")
    rows = make_delivery_times(200, seed=99)
    predicted = predictor.predict(rows)
    truth = rows.column("delivery_minutes").to_numpy()
    assert predicted.dtype == np.float64 and predicted.shape == (200,)
    assert float(np.sqrt(np.mean((predicted - truth) ** 2))) < 9.0  # minutes, on rows it never saw
