"""SubmitRayJobOperator through the real scheduler, LocalExecutor and triggerer.

`dag.test()` runs the trigger inline; here the task defers, its worker slot is released, and
the real triggerer rebuilds `RayJobTrigger` from the kwargs stored in the database and follows
the job on the session's Ray head (`ray_head`; the services share its RAYOPS_HOME).
"""

from __future__ import annotations

import json
import os

import pytest

SUCCEEDS_DAG = "ray_job_on_triggerer_succeeds"
FAILS_DAG = "ray_job_on_triggerer_fails"

SUCCEEDS = (
    'python -c \'import time; print("step one: loading", flush=True); time.sleep(3);'
    ' print("step two: training", flush=True);'
    ' from airflow_provider_rayops.jobs.runtime import report_result; report_result({"answer": 42})\''
)
FAILS = (
    'python -c \'import time; print("loading data", flush=True); time.sleep(2);'
    ' raise SystemExit("ValueError: column churned is missing")\''
)

DAG_TEMPLATE = """
import json

from airflow.sdk import DAG

from airflow_provider_rayops.operators.ray_job import SubmitRayJobOperator

with DAG({dag_id!r}, schedule=None, catchup=False):
    SubmitRayJobOperator(
        task_id="job",
        entrypoint={entrypoint!r},
        compute=json.loads({compute!r}),
        deferrable=True,
        poll_interval=0.5,
    )
"""


@pytest.fixture(scope="module")
def runs(ray_head, airflow_stack):
    """Both DAGs run side by side (deferred tasks hold no worker slot); their run records."""
    assert airflow_stack.env["RAYOPS_HOME"] == os.environ["RAYOPS_HOME"]
    compute = json.dumps(ray_head.compute)
    for dag_id, entrypoint in ((SUCCEEDS_DAG, SUCCEEDS), (FAILS_DAG, FAILS)):
        source = DAG_TEMPLATE.format(dag_id=dag_id, entrypoint=entrypoint, compute=compute)
        airflow_stack.write_dag(f"{dag_id}.py", source)
    run_ids = {}
    for dag_id in (SUCCEEDS_DAG, FAILS_DAG):
        airflow_stack.wait_for_dag(dag_id)
        airflow_stack.unpause(dag_id)
        run_ids[dag_id] = airflow_stack.trigger(dag_id)
    return {dag_id: airflow_stack.wait_for_run(dag_id, run_id) for dag_id, run_id in run_ids.items()}


def _log(airflow_stack, run) -> str:
    return airflow_stack.task_log(run.dag_id, run.run_id, "job")


def test_ray_job_run_succeeds_with_the_result_in_xcom(airflow_stack, runs):
    run = runs[SUCCEEDS_DAG]
    assert run.state == "success", _log(airflow_stack, run)
    assert airflow_stack.xcom(run.dag_id, run.run_id, "job") == {"answer": 42}


def test_ray_job_task_is_deferred_while_the_job_runs(airflow_stack, runs):
    run = runs[SUCCEEDS_DAG]
    ti = run.task_instances["job"]
    # One try: submitted, deferred (slot released) while the job ran, resumed once to finish.
    assert ti.events == ("running", "deferred", "running", "success")
    assert "Pausing task as DEFERRED" in _log(airflow_stack, run)


def test_ray_job_trigger_runs_in_the_triggerer_from_its_stored_kwargs(airflow_stack, ray_head, runs):
    run = runs[SUCCEEDS_DAG]
    sid = airflow_stack.xcom(run.dag_id, run.run_id, "job", key="ray_job")["submission_id"]
    assert sid.startswith(f"rayops-{SUCCEEDS_DAG}--job--manual__") and sid.endswith("-1")
    trigger_log = airflow_stack.trigger_log(run.dag_id, run.run_id, "job")
    # submission_id and compute came through serialize() -> database -> triggerer intact.
    assert f"Following Ray job {sid} at {ray_head.endpoint.job_url(sid)}" in trigger_log
    assert f"Ray job {sid} ended SUCCEEDED" in trigger_log


def test_ray_job_trigger_never_blocks_the_triggerer_event_loop(airflow_stack, runs):
    """No step of these DAGs' triggers held the triggerer's event loop for over 0.5 s (a blocking
    call would: an HTTP request, a sleep, a file read). Only these triggers are looked at: other
    tests' triggers share the triggerer. tests/triggers/test_ray_job.py checks the same without
    a clock, by refusing every blocking call on the loop's thread."""
    for dag_id in (SUCCEEDS_DAG, FAILS_DAG):
        assert airflow_stack.slow_trigger_steps(dag_id) == []


def test_ray_job_log_lines_reach_the_task_log(airflow_stack, runs):
    run = runs[SUCCEEDS_DAG]
    log = _log(airflow_stack, run)
    assert log.index("step one: loading") < log.index("step two: training")


def test_failed_ray_job_fails_the_task_with_its_last_log_lines(airflow_stack, runs):
    run = runs[FAILS_DAG]
    assert run.state == "failed"
    ti = run.task_instances["job"]
    assert ti.events == ("running", "deferred", "running", "failed")
    log = _log(airflow_stack, run)
    assert "RayJobFailed" in log
    assert "FAILED" in log
    failure = log[log.index("RayJobFailed") :]
    assert "loading data" in failure
    assert "ValueError: column churned is missing" in failure


def test_a_cleared_task_runs_its_job_again_instead_of_re_attaching(airflow_stack, ray_head, runs):
    """Clearing a finished task (the UI's Clear) means "do it again": before, the new try found
    the old SUCCEEDED job by its deterministic id and succeeded without running anything."""
    run = runs[SUCCEEDS_DAG]
    first = airflow_stack.xcom(run.dag_id, run.run_id, "job", key="ray_job")["submission_id"]
    airflow_stack.api(
        "POST",
        f"/api/v2/dags/{SUCCEEDS_DAG}/clearTaskInstances",
        {"dry_run": False, "task_ids": ["job"], "dag_run_id": run.run_id, "only_failed": False},
    )
    again = airflow_stack.wait_for_run(run.dag_id, run.run_id)
    assert again.state == "success"
    assert again.task_instances["job"].try_number == 2
    second = airflow_stack.xcom(run.dag_id, run.run_id, "job", key="ray_job")["submission_id"]
    assert second != first
    client = ray_head.client()
    jobs = [client.get_job(first), client.get_job(second)]
    assert [job.status.value for job in jobs] == ["SUCCEEDED", "SUCCEEDED"]
    assert [job.metadata["rayops_try_number"] for job in jobs] == ["1", "2"]
    assert "step two: training" in client.get_logs(second)
