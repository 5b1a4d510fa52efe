"""DriftSensor through Airflow's dag.test(), against a real MLflow server and the S3 endpoint.

The champion is a real tiny model (tests/registry/models.py) registered with the train job's
lineage, scored by the real evaluate job (which writes its validation predictions, the reference
of prediction drift). The live data is what the endpoint's replicas write: parts of the real
InferenceLog, holding fresh churn rows and the model's answers. Each test gets its own registered
model and storage folder, so the monitor's state of one never reaches another.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid
from typing import Any

import pytest
from airflow.sdk import DAG, Asset

from airflow_provider_rayops import storage
from airflow_provider_rayops import tag_names as names
from airflow_provider_rayops.drift.check import MonitorState, monitor_uri
from airflow_provider_rayops.jobs import evaluate
from airflow_provider_rayops.jobs.datasets import make_churn
from airflow_provider_rayops.jobs.modeling.mlflow_model import predictions_frame
from airflow_provider_rayops.registry.registration import register_version
from airflow_provider_rayops.sensors.drift import DriftSensor
from airflow_provider_rayops.serving.inference_log import InferenceLog, log_uri
from tests.fixtures.airflow_db import run_dag_test
from tests.fixtures.s3 import S3_BUCKET, s3_endpoint
from tests.registry.models import CONN_ID, FAST_LATENCY, mlflow_registry, registry_snapshot, trained, unique_name

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
PIPELINE = "churn"


@pytest.fixture(scope="module")
def champion(mlflow_registry, trained, s3_endpoint) -> dict[str, Any]:
    """The strong model scored by the evaluate job (predictions written) and its model object."""
    model = trained["strong"]
    root = f"s3://{S3_BUCKET}/drift-sensor-{uuid.uuid4().hex[:8]}"
    result = evaluate.main(
        {
            "model_uri": model.model_uri,
            "snapshot_uri": mlflow_registry.snapshot["snapshot_uri"],
            "mlflow_run_id": model.run_id,
            "latency": FAST_LATENCY,
            "predictions_folder": f"{root}/runs/churn/evaluated",
        }
    )
    return {"model": model, "predictor": evaluate.load_model(model.model_uri).predictor, "evaluation": result}


@pytest.fixture
def pipeline(champion, mlflow_registry, s3_endpoint) -> dict[str, Any]:
    """A registered model whose v1 (the strong model, with its lineage) is champion, and an empty storage root."""
    name = unique_name("drift")
    client = mlflow_registry.client()
    model = champion["model"]
    version, _ = register_version(
        client, registered_model=name, model_uri=model.model_uri, run_id=model.run_id, tags=model.lineage
    )
    client.set_registered_model_alias(name, "champion", version.version)
    return {"name": name, "version": str(version.version), "root": f"s3://{S3_BUCKET}/{name}", "client": client}


def serve(pipeline: dict[str, Any], champion: dict[str, Any], rows: int, *, drift: float, seed: int, version: str | None = None):
    """`rows` fresh churn rows answered by the champion, written to the inference log as the replicas do."""
    table = make_churn(rows, seed=seed, drift=drift).drop_columns(["churned"])
    answers = predictions_frame(champion["predictor"], table).to_dict("records")
    log = InferenceLog(log_uri(pipeline["root"], PIPELINE), version=version or pipeline["version"], flush_rows=10**6)
    log.add(table, answers)
    assert log.flush() is not None


def monitor(pipeline: dict[str, Any], *, poke_timeout: float = 0.5, **kwargs) -> tuple[DAG, Asset]:
    asset = Asset(name=f"drift_{pipeline['name']}", uri=f"rayops://drift/{pipeline['name']}")
    with DAG(f"monitor_{pipeline['name']}", schedule=None, start_date=START, catchup=False) as dag:
        DriftSensor(
            task_id="check",
            pipeline=PIPELINE,
            lifecycle_dag_id=f"lifecycle_{pipeline['name']}",
            registered_model=pipeline["name"],
            storage_root=pipeline["root"],
            mlflow_conn_id=CONN_ID,
            drift={"min_rows": 500, **kwargs.pop("drift", {})},
            mode="poke",  # dag.test() runs one try; a real deployment reschedules between pokes
            poke_interval=0.1,
            timeout=poke_timeout,
            outlets=[asset],
            **kwargs,
        )
    return dag, asset


def run_check(dag: DAG) -> tuple[str, Any]:
    run = run_dag_test(dag)
    ti = next(ti for ti in run.get_task_instances() if ti.task_id == "check")
    return ti.state, ti.xcom_pull(task_ids="check")


def asset_events(asset: Asset) -> list[dict[str, Any]]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id).where(AssetModel.name == asset.name)
        return [dict(event.extra or {}) for event in session.scalars(query)]


def test_drifted_live_rows_start_retraining_with_the_report_in_the_event(airflow_db, pipeline, champion):
    serve(pipeline, champion, 600, drift=1.0, seed=1)
    dag, asset = monitor(pipeline)
    state, summary = run_check(dag)
    assert state == "success"
    assert summary["reasons"] == ["data_drift"] and summary["dataset_drift"] is True
    assert set(summary["drifted_columns"]) >= {"tenure_months", "monthly_charges", "support_calls"}
    assert (summary["champion_version"], summary["current_rows"]) == (pipeline["version"], 600)
    assert summary["prediction_drift"] is not None  # judged against the evaluate job's predictions
    [event] = asset_events(asset)
    assert event["report_html_uri"] == summary["report_html_uri"] and event["reasons"] == ["data_drift"]
    report = json.loads(storage.read_bytes(summary["report_uri"]))
    assert report["dataset_drift"] is True and report["check"]["pipeline"] == PIPELINE
    assert "Dataset drift." in storage.read_bytes(summary["report_html_uri"]).decode()
    client = pipeline["client"]
    tags = client.get_model_version(pipeline["name"], pipeline["version"]).tags
    assert tags[names.DRIFT_REPORT_URI] == summary["report_html_uri"]
    assert tags[names.DRIFT_VERDICT].startswith("dataset drift: ")
    logged = [a.path for a in client.list_artifacts(champion["model"].run_id, "drift")]
    check = summary["report_uri"].rsplit("/", 2)[-2]
    assert f"drift/{check}" in logged
    assert summary["report_url"].endswith(f"/artifactPath/drift/{check}/drift.html")


def test_live_rows_like_the_training_data_skip_the_check_and_emit_nothing(airflow_db, pipeline, champion):
    serve(pipeline, champion, 600, drift=0.0, seed=2)
    dag, asset = monitor(pipeline)
    state, _ = run_check(dag)
    assert state == "skipped"
    assert asset_events(asset) == []
    saved = MonitorState.load(pipeline["root"], PIPELINE)
    assert saved.version == pipeline["version"] and saved.watermark is not None and saved.last_retrain_at is None
    assert saved.last_report_uri.endswith("/drift.json")


def test_too_few_new_rows_wait_and_the_check_is_skipped_without_a_report(airflow_db, pipeline, champion):
    serve(pipeline, champion, 300, drift=1.0, seed=3)
    serve(pipeline, champion, 900, drift=1.0, seed=4, version="7")  # another version's rows do not count
    dag, asset = monitor(pipeline)
    state, _ = run_check(dag)
    assert state == "skipped"  # the sensor timed out (soft_fail)
    assert asset_events(asset) == []
    assert MonitorState.load(pipeline["root"], PIPELINE).last_report_uri is None
    assert not storage.exists(f"{monitor_uri(pipeline['root'], PIPELINE)}/state.json")


def test_live_rows_missing_a_column_are_not_judged_and_the_sensor_keeps_waiting(airflow_db, pipeline, champion):
    table = make_churn(600, seed=5, drift=1.0).drop_columns(["churned", "plan"])
    log = InferenceLog(log_uri(pipeline["root"], PIPELINE), version=pipeline["version"])
    log.add(table, [{"prediction": False}] * 600)
    log.flush()
    dag, asset = monitor(pipeline)
    state, _ = run_check(dag)
    assert state == "skipped" and asset_events(asset) == []
    saved = MonitorState.load(pipeline["root"], PIPELINE)
    assert saved.watermark is None  # the rows will be judged again with the next ones
    report = json.loads(storage.read_bytes(saved.last_report_uri))
    assert report["problems"] == ["column 'plan': in the reference, missing from the current data"]


def test_a_second_drift_within_the_cooldown_starts_no_retraining(airflow_db, pipeline, champion):
    serve(pipeline, champion, 600, drift=1.0, seed=6)
    dag, asset = monitor(pipeline, cooldown_s=3600)
    assert run_check(dag)[0] == "success"
    first = MonitorState.load(pipeline["root"], PIPELINE)
    serve(pipeline, champion, 600, drift=1.5, seed=7)
    state, _ = run_check(dag)
    assert state == "skipped"
    assert len(asset_events(asset)) == 1
    second = MonitorState.load(pipeline["root"], PIPELINE)
    assert second.last_retrain_at == first.last_retrain_at
    assert second.watermark > first.watermark and second.last_report_uri != first.last_report_uri


def _storage_connection(monkeypatch, s3_endpoint) -> None:
    """The rayops_s3 connection rayops_s3_drift, to the session's S3 endpoint with its keys."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_RAYOPS_S3_DRIFT",
        json.dumps({
            "conn_type": "rayops_s3", "host": s3_endpoint.endpoint_url, "login": s3_endpoint.access_key,
            "password": s3_endpoint.secret_key, "extra": {"region": s3_endpoint.region},
        }),
    )  # fmt: skip


def test_a_check_that_needs_more_than_memory_mb_is_judged_as_a_ray_job(
    airflow_db, pipeline, champion, ray_head, s3_endpoint, monkeypatch
):
    """The same verdict, computed on the session's Ray head; the job reads and writes S3 with the
    storage connection's settings, as a cluster's job would."""
    _storage_connection(monkeypatch, s3_endpoint)
    serve(pipeline, champion, 600, drift=1.0, seed=8)
    dag, asset = monitor(
        pipeline, poke_timeout=240, drift={"memory_mb": 0}, compute=ray_head.compute, storage_conn_id="rayops_s3_drift"
    )
    state, summary = run_check(dag)
    assert state == "success"
    assert summary["reasons"] == ["data_drift"]
    jobs = [job for job in ray_head.client().list_jobs() if job.metadata.get("rayops_registered_model") == pipeline["name"]]
    assert jobs[0].submission_id.startswith("rayops-churn--monitor--v1-")
    assert [job.status.value for job in jobs] == ["SUCCEEDED"]
    report = json.loads(storage.read_bytes(summary["report_uri"]))
    assert report["check"]["model"].startswith(pipeline["name"]) and report["dataset_drift"] is True
    assert len(asset_events(asset)) == 1


def test_on_kuberay_a_check_over_memory_mb_is_a_rayjob_whose_pods_hold_the_storage_credentials(
    airflow_db, pipeline, champion, kuberay, s3_endpoint, monkeypatch
):
    """The same check as a RayJob of the simulated KubeRay (tests/fixtures/kube_api.py), run on the
    session's head: the storage connection's endpoint travels in the RayJob, its keys only in the
    Kubernetes Secret the profile's secret_env names (the simulated pods' envFrom)."""
    from airflow_provider_rayops.backends.kuberay.manifests import RAYJOBS
    from airflow_provider_rayops.storage import S3Settings

    settings = S3Settings(endpoint_url=s3_endpoint.endpoint_url, access_key=s3_endpoint.access_key,
                          secret_key=s3_endpoint.secret_key, region=s3_endpoint.region)  # fmt: skip
    kuberay.api.secrets[("ml", "minio-credentials")] = {k: v for k, v in settings.to_env().items() if k.startswith("AWS_")}
    _storage_connection(monkeypatch, s3_endpoint)
    serve(pipeline, champion, 600, drift=1.0, seed=8)
    profile = {"backend": "kuberay", "conn_id": kuberay.conn_id, "namespace": "ml", "image": "ghcr.io/acme/rayops:0.1.0",
               "secret_env": ["minio-credentials"]}  # fmt: skip
    dag, asset = monitor(pipeline, poke_timeout=240, drift={"memory_mb": 0}, compute=profile, storage_conn_id="rayops_s3_drift")
    state, summary = run_check(dag)
    assert state == "success"
    assert summary["reasons"] == ["data_drift"]
    (ray_job,) = [
        o for o in kuberay.api.list(RAYJOBS, "ml") if o["spec"]["metadata"].get("rayops_registered_model") == pipeline["name"]
    ]
    assert ray_job["spec"]["jobId"].startswith("rayops-churn--monitor--v1-")
    assert ray_job["status"]["jobDeploymentStatus"] == "Complete"
    assert s3_endpoint.secret_key not in json.dumps(ray_job)
    assert s3_endpoint.endpoint_url in ray_job["spec"]["runtimeEnvYAML"]
    container = ray_job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert container["envFrom"] == [{"secretRef": {"name": "minio-credentials"}}]
    assert json.loads(storage.read_bytes(summary["report_uri"]))["dataset_drift"] is True
    assert len(asset_events(asset)) == 1


def test_a_quality_drop_on_labelled_served_rows_starts_retraining_without_drift(airflow_db, pipeline, champion):
    """Rows like the training data (no drift), whose labels arrive later and disagree with most answers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = make_churn(600, seed=9).drop_columns(["churned"])
    answers = predictions_frame(champion["predictor"], table)
    table = table.append_column("customer_id", pa.array([f"c{i}" for i in range(600)]))
    log = InferenceLog(log_uri(pipeline["root"], PIPELINE), version=pipeline["version"], flush_rows=10**6)
    log.add(table, answers.to_dict("records"))
    log.flush()
    wrong = [not bool(p) for p in answers["prediction"]]  # every label the opposite of the answer
    labels = pa.table({"customer_id": [f"c{i}" for i in range(450)], "churned": wrong[:450]})
    buffer = io.BytesIO()
    pq.write_table(labels, buffer)
    storage.write_bytes(f"{pipeline['root']}/labels/2026-01-02.parquet", buffer.getvalue())
    performance = {
        "labels": f"{pipeline['root']}/labels/", "join_key": "customer_id", "label": "churned",
        "metric": "accuracy", "min": 0.7, "min_rows": 100,
    }  # fmt: skip
    dag, asset = monitor(pipeline, performance=performance)
    state, summary = run_check(dag)
    assert state == "success"
    assert summary["reasons"] == ["performance"] and summary["dataset_drift"] is False
    quality = summary["performance"]
    assert (quality["metric"], quality["rows"], quality["value"], quality["breached"]) == ("accuracy", 450, 0.0, True)
    assert asset_events(asset)[0]["performance"]["value"] == 0.0
