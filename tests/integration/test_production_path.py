"""The production path, once, for real, and the loop it closes.

The example pipeline (`dag_configs/churn.yaml`, with the data `make demo` generates, triggered by
hand only) through the
DAG file users deploy (`dags/rayops_pipelines.py`), parsed by the real dag-processor, triggered
through Airflow's REST API, scheduled by the scheduler and run by the LocalExecutor. Every Ray
stage defers: the real triggerer rebuilds `RayJobTrigger` from its stored kwargs and follows
the job on the session's Ray head. The run ends with a champion in the (embedded) MLflow
registry whose lineage names this very run, config and Ray job. `dag.test()` proves none of
this: it runs triggers inline and drops defer kwargs.

Then the loop: rows unlike the training data are sent to the endpoint; the monitor DAG
(`churn__monitor`, triggered by hand) judges the champion's inference log, finds drift and emits
the pipeline's asset event; the scheduler starts the lifecycle DAG on it (an asset-triggered run,
nobody calls the DAG); that run retrains, passes the gates and a canary (each step held in the real
triggerer), and its model version names the drift report as its trigger.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import requests

from airflow_provider_rayops import tag_names as names
from airflow_provider_rayops.config.loader import load_config_dir
from airflow_provider_rayops.hooks.mlflow import MlflowHook
from airflow_provider_rayops.jobs.datasets import make_churn, table_bytes
from airflow_provider_rayops.serving.inference_log import FLUSH_ROWS
from tests.fixtures.network import free_port

ROOT = Path(__file__).resolve().parents[2]
RAY_STAGES = ("ingest.snapshot", "train.fit", "evaluate.score")
REGISTRY_STAGES = ("promote.register", "deploy.serve", "promote.champion")
CANARY_HOLD = "4s"
# A full part of the inference log: the replica writes it at once, not after FLUSH_S (10 s).
DRIFTED_ROWS = FLUSH_ROWS
DEPLOYED_LINE = 'load_pipelines(globals(), default_config_dir=Path(__file__).resolve().parent.parent / "dag_configs")'


@pytest.fixture(scope="module")
def production(tmp_path_factory, ray_head, airflow_stack):
    """A copy of the project (configs and generated data), its DAG file in the stack's DAG folder,
    one run triggered through the REST API; the run's record and the project folder."""
    # The services find the session's Ray head and embedded MLflow store through RAYOPS_HOME.
    assert airflow_stack.env["RAYOPS_HOME"] == os.environ["RAYOPS_HOME"]
    project = tmp_path_factory.mktemp("project")
    shutil.copytree(ROOT / "dag_configs", project / "dag_configs")
    # Unpausing the @weekly DAG would also start its latest scheduled run beside ours: this test
    # wants exactly one run, so the copy is triggered by hand only (nothing else differs).
    example = project / "dag_configs" / "churn.yaml"
    assert 'schedule: "@weekly"' in example.read_text()
    example.write_text(example.read_text().replace('schedule: "@weekly"', "schedule: null"))
    # The monitor too: its checks run when this test triggers them (the DAGs arrive unpaused).
    assert '  schedule: "@hourly"' in example.read_text()
    example.write_text(example.read_text().replace('  schedule: "@hourly"', "  schedule: null"))
    # The endpoint on a free port of this machine (the example's 8000 may be taken here).
    port = free_port()
    assert "  route_prefix: /churn\n" in example.read_text()
    example.write_text(example.read_text().replace("  route_prefix: /churn\n", f"  route_prefix: /churn\n  http_port: {port}\n"))
    # The retraining's canary holds each step a few seconds, not the example's 10: still deferred
    # to the real triggerer at each step, and judged, 12 s sooner.
    assert "    hold: 10s " in example.read_text()
    example.write_text(example.read_text().replace("    hold: 10s ", f"    hold: {CANARY_HOLD} "))
    (project / "data").mkdir()
    # The rows and seed `make demo` uses (scripts/demo.py): the example's gates are set for them.
    (project / "data" / "churn.parquet").write_bytes(table_bytes(make_churn(20_000, seed=7), fmt="parquet"))
    deployed = (ROOT / "dags" / "rayops_pipelines.py").read_text()
    assert DEPLOYED_LINE in deployed
    # The deployed file, its config folder named outright (what RAYOPS_CONFIG_DIR does in a deployment).
    airflow_stack.write_dag(
        "rayops_pipelines.py",
        deployed.replace(DEPLOYED_LINE, f"load_pipelines(globals(), config_dir={str(project / 'dag_configs')!r})"),
    )
    record = airflow_stack.run_dag("churn", timeout=900, parse_timeout=120)
    try:
        answer = requests.post(
            f"http://127.0.0.1:{port}/churn/",
            json={"dataframe_records": make_churn(3, seed=11).drop(["churned"]).to_pylist()},
            timeout=30,
        )
        yield record, project, answer, port
    finally:
        api = ray_head.dashboard_url.rstrip("/") + "/api/serve/applications/"
        requests.delete(api, headers=ray_head.endpoint.headers(), timeout=60)


def test_the_example_pipeline_succeeds_through_the_scheduler(airflow_stack, production):
    record, *_ = production
    logs = {task: airflow_stack.task_log(record.dag_id, record.run_id, task) for task in record.task_instances}
    assert record.state == "success", logs
    assert {task: ti.state for task, ti in record.task_instances.items()} == dict.fromkeys(
        RAY_STAGES + REGISTRY_STAGES, "success"
    )


def test_every_ray_stage_deferred_to_the_real_triggerer(airflow_stack, production):
    record, *_ = production
    for task in RAY_STAGES:
        ti = record.task_instances[task]
        # Submitted, deferred (worker slot released) while the Ray job ran, resumed to finish.
        assert ti.events[-3:] == ("deferred", "running", "success"), (task, ti.events)
        trigger_log = airflow_stack.trigger_log(record.dag_id, record.run_id, task, try_number=ti.try_number)
        assert "Following Ray job rayops-churn--" in trigger_log, (task, trigger_log[-2000:])
    for task in REGISTRY_STAGES:
        assert not record.task_instances[task].was_deferred, task


def test_the_run_ends_with_a_champion_whose_lineage_is_this_run(airflow_stack, production):
    record, project, *_ = production
    (loaded,) = [p for p in load_config_dir(project / "dag_configs").pipelines if p.spec.pipeline == "churn"]
    train_job = airflow_stack.xcom(record.dag_id, record.run_id, "train.fit", key="ray_job")
    registered = airflow_stack.xcom(record.dag_id, record.run_id, "promote.register")
    assert registered["passed"] is True

    client = MlflowHook(None).get_conn()
    versions = client.search_model_versions("name = 'churn'")
    assert [(v.version, v.run_id) for v in versions] == [(int(registered["version"]), registered["train_run_id"])]
    champion = client.get_model_version_by_alias("churn", "champion")
    assert str(champion.version) == registered["version"]
    tags = champion.tags
    assert tags[names.DAG_ID] == "churn" and tags[names.RUN_ID] == record.run_id
    assert tags[names.CONFIG_HASH] == loaded.config_hash
    assert tags[names.RAY_JOB_ID] == train_job["submission_id"]
    assert tags[names.SNAPSHOT_URI].startswith(f"file://{project}/.rayops/artifacts/snapshots/churn/")
    assert tags[names.DEPLOY_OUTCOME] == "serving"  # the champion alias moved once the version served


def test_the_champion_answers_at_the_endpoint_the_run_deployed(airflow_stack, production):
    record, _, answer, _ = production
    assert answer.status_code == 200, answer.text
    body = answer.json()
    deployed = airflow_stack.xcom(record.dag_id, record.run_id, "deploy.serve")
    assert deployed["outcome"] == "serving" and body["version"] == deployed["version"]
    assert len(body["predictions"]) == 3 and {"prediction", "probability_True"} <= set(body["predictions"][0])


@pytest.fixture(scope="module")
def drift_loop(airflow_stack, production):
    """Drifted rows served, the monitor run that judged them, and the run the scheduler started on its event."""
    from airflow_provider_rayops.drift.check import count_rows, live_files
    from airflow_provider_rayops.serving.inference_log import log_uri

    record, project, _, port = production
    assert record.state == "success"
    shifted = make_churn(DRIFTED_ROWS, seed=99, drift=1.0).drop(["churned"]).to_pylist()
    answer = requests.post(f"http://127.0.0.1:{port}/churn/", json={"dataframe_records": shifted}, timeout=60)
    assert answer.status_code == 200, answer.text
    champion = airflow_stack.xcom(record.dag_id, record.run_id, "promote.register")["version"]
    live = log_uri(f"file://{project}/.rayops/artifacts", "churn")
    deadline = time.monotonic() + 60  # the replica writes its log once FLUSH_ROWS wait (or every 10 s)
    while count_rows(live_files(live, version=champion)) < DRIFTED_ROWS:
        assert time.monotonic() < deadline, "the served rows never reached the inference log"
        time.sleep(1)
    known = {run["dag_run_id"] for run in airflow_stack.dag_runs("churn")}
    check = airflow_stack.run_dag("churn__monitor", timeout=300)
    retrain_id = airflow_stack.wait_for_new_run("churn", known=known, timeout=120)
    retrain = airflow_stack.wait_for_run("churn", retrain_id, timeout=900)
    return check, retrain


def test_drift_in_the_served_rows_starts_retraining_through_the_scheduler(airflow_stack, drift_loop):
    check, retrain = drift_loop
    assert check.state == "success" and check.task_instances["check"].state == "success"
    summary = airflow_stack.xcom(check.dag_id, check.run_id, "check")
    assert summary["reasons"] == ["data_drift"] and summary["current_rows"] >= DRIFTED_ROWS
    assert airflow_stack.dag_run("churn", retrain.run_id)["run_type"] == "asset_triggered"
    logs = {task: airflow_stack.task_log(retrain.dag_id, retrain.run_id, task) for task in retrain.task_instances}
    assert retrain.state == "success", logs
    deployed = airflow_stack.xcom(retrain.dag_id, retrain.run_id, "deploy.serve")
    assert deployed["outcome"] == "serving" and [step["percent"] for step in deployed["steps"]] == [50, 100]
    assert retrain.task_instances["deploy.serve"].was_deferred  # each canary step held in the real triggerer


def test_the_retrained_champion_names_the_drift_report_as_its_trigger(airflow_stack, drift_loop):
    check, retrain = drift_loop
    summary = airflow_stack.xcom(check.dag_id, check.run_id, "check")
    registered = airflow_stack.xcom(retrain.dag_id, retrain.run_id, "promote.register")
    client = MlflowHook(None).get_conn()
    champion = client.get_model_version_by_alias("churn", "champion")
    assert str(champion.version) == registered["version"]
    tags = champion.tags
    assert tags[names.TRIGGER] == "drift" and tags[names.TRIGGER_REPORT] == summary["report_html_uri"]
    assert tags[names.RUN_ID] == retrain.run_id
    previous = client.get_model_version_by_alias("churn", "previous")
    assert previous.tags[names.TRIGGER] == "manual" and names.TRIGGER_REPORT not in previous.tags
    assert previous.tags[names.DRIFT_REPORT_URI] == summary["report_html_uri"]  # the check judged that version
