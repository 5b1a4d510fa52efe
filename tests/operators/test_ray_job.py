"""SubmitRayJobOperator on a real local Ray head, run by Airflow's dag.test() (triggers inline)."""

from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
import threading
import time
import types

import pydantic
import pytest
from airflow.sdk import DAG

from airflow_provider_rayops.hooks.ray import RayHook
from airflow_provider_rayops.hooks.ray_jobs_api import BackendNotAvailable, JobInfo, JobStatus, RayJobFailed
from airflow_provider_rayops.jobs.runtime import JOB_ARGS_ENV
from airflow_provider_rayops.operators.ray_job import JobIdentity, SubmitRayJobOperator, submission_id
from airflow_provider_rayops.operators.run_values import RunFact, RunTrigger, TriggerParam
from tests.fixtures.airflow_db import run_dag_test

ROOT = pathlib.Path(__file__).resolve().parents[2]
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ECHO_ARGS = "python -c 'from airflow_provider_rayops.jobs import run_job; run_job(lambda args: {\"echo\": args})'"


def _python(code: str) -> str:
    """An entrypoint running `code` (no single quotes in it) with this venv's python."""
    assert "'" not in code
    return f"python -c '{code}'"


def _run(dag: DAG, **kwargs):
    return run_dag_test(dag, **kwargs)


def _only_ti(run):
    (ti,) = run.get_task_instances()
    return ti


def _dag(dag_id: str) -> DAG:
    return DAG(dag_id, schedule=None, start_date=START, catchup=False)


class _Failures:
    """An on_failure_callback that keeps the exception each failed try raised."""

    def __init__(self) -> None:
        self.exceptions: list[BaseException] = []

    def __call__(self, context) -> None:
        self.exceptions.append(context["exception"])


def _run_one(dag_id: str, **operator_kwargs):
    """One SubmitRayJobOperator (task "job" unless given) in a DAG of its own, run with dag.test():
    (run, its task instance, the exceptions its failed tries raised)."""
    failures = _Failures()
    kwargs = {"task_id": "job", "entrypoint_num_cpus": 0.1, "poll_interval": 0.3, "deferrable": True, **operator_kwargs}
    with _dag(dag_id) as dag:
        SubmitRayJobOperator(on_failure_callback=failures, **kwargs)
    run = _run(dag)
    return run, _only_ti(run), failures.exceptions


def _wait_for_job(client, dag_id: str, status: JobStatus, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in client.list_jobs():
            if job.metadata.get("rayops_dag_id") == dag_id and job.status is status:
                return job
        time.sleep(0.2)
    raise AssertionError(f"no {status} job of {dag_id} within {timeout}s")


# -- submission ids ---------------------------------------------------------------------


def _identity(**changes) -> JobIdentity:
    fields = {
        "deployment": "airflow",
        "dag_id": "churn",
        "run_id": "manual__2026-01-01T00:00:00+00:00",
        "task_id": "ingest.snapshot",
    }
    return JobIdentity(**{**fields, **changes})


def test_submission_ids_are_readable_deterministic_and_distinct():
    base = _identity().base
    assert base == _identity().base
    assert base.startswith("rayops-churn--ingest.snapshot--manual__2026-01-01T00_00_00_00_00-")
    assert len(base.rsplit("-", 1)[1]) == 20  # 80 bits of hash, not 32
    assert submission_id(base, 2) == base + "-2"
    mapped = _identity(map_index=3).base
    assert "--m3--" in mapped and mapped != base
    long_a = _identity(dag_id="d" * 200, task_id="a").base
    long_b = _identity(dag_id="d" * 200, task_id="b").base
    assert long_a != long_b and len(long_a) < 130


def test_another_deployment_or_dag_run_gets_other_ids_and_is_not_owned():
    mine = _identity(run_started="2026-01-01T00:00:01.123456+00:00")
    theirs = _identity(deployment="staging", run_started=mine.run_started)
    same_name_other_airflow = _identity(run_started="2026-01-01T00:00:01.654321+00:00")
    assert len({mine.base, theirs.base, same_name_other_airflow.base}) == 3
    job = JobInfo(submission_id=mine.base + "-1", status=JobStatus.RUNNING, metadata=theirs.metadata(try_number=1))
    assert not mine.owns(job)
    assert mine.owns(JobInfo(submission_id=mine.base + "-1", status=JobStatus.RUNNING, metadata=mine.metadata(try_number=3)))


def test_job_args_travel_as_json_beside_the_users_env_vars():
    op = SubmitRayJobOperator(
        task_id="t",
        entrypoint="python -m x",
        runtime_env={"env_vars": {"MODE": "fast"}, "pip": ["rich"]},
        job_args={"epochs": 3},
    )
    env = op._runtime_env()
    assert env["pip"] == ["rich"]
    assert env["env_vars"] == {"MODE": "fast", JOB_ARGS_ENV: '{"epochs": 3}'}
    assert op.runtime_env == {"env_vars": {"MODE": "fast"}, "pip": ["rich"]}  # not mutated


def test_a_malformed_compute_profile_is_refused_when_the_dag_is_built():
    with pytest.raises(pydantic.ValidationError, match=r"local\.cpus\s+Extra inputs are not permitted"):
        SubmitRayJobOperator(task_id="t", entrypoint="python -m x", compute={"backend": "local", "cpus": 2})


def test_job_args_are_shown_rendered_but_never_go_through_jinja():
    assert set(SubmitRayJobOperator.template_fields) == {
        "entrypoint", "runtime_env", "job_args", "ray_conn_id", "storage_conn_id", "mlflow_conn_id",
    }  # fmt: skip
    assert SubmitRayJobOperator.data_fields == ("job_args",)


def test_a_cluster_is_named_by_connection_or_by_profile_not_both():
    with pytest.raises(ValueError, match=r"give either ray_conn_id .* or compute .*, not both"):
        SubmitRayJobOperator(task_id="t", entrypoint="true", ray_conn_id="ray_prod", compute={"backend": "local"})
    plain = SubmitRayJobOperator(task_id="t", entrypoint="true")
    assert plain._profile() == {"backend": "ray", "conn_id": RayHook.default_conn_name}
    assert SubmitRayJobOperator(task_id="t", entrypoint="true", ray_conn_id="ray_prod")._profile() == {
        "backend": "ray", "conn_id": "ray_prod",
    }  # fmt: skip


def test_deferrable_follows_airflows_default_deferrable_setting():
    """Like Airflow's own deferrable operators: `[operators] default_deferrable` decides when unset."""
    import subprocess
    import sys

    code = "from airflow_provider_rayops.operators.ray_job import SubmitRayJobOperator as O; print(O(task_id='t', entrypoint='x').deferrable)"
    seen = {}
    for setting in ("True", "False"):
        env = {**os.environ, "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": setting}
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        seen[setting] = proc.stdout.strip().splitlines()[-1]
    assert seen == {"True": "True", "False": "False"}


def test_the_plain_dag_example_runs_a_job_on_a_cluster_named_by_connection(airflow_db, ray_head, monkeypatch):
    """examples/plain_ray_job_dag.py (the README's plain DAG): no YAML, a `rayops_ray` connection, a Param."""
    from airflow.dag_processing.dagbag import DagBag

    conn = {"conn_type": "rayops_ray", "host": ray_head.dashboard_url, "password": ray_head.endpoint.token}
    monkeypatch.setenv("AIRFLOW_CONN_RAY_PROD", json.dumps(conn))
    bag = DagBag(dag_folder=str(ROOT / "examples" / "plain_ray_job_dag.py"))
    assert bag.import_errors == {}
    run = _run(bag.get_dag("ray_job_example"), run_conf={"n": 10})
    ti = _only_ti(run)
    assert (run.state, ti.state) == ("success", "success")
    assert ti.xcom_pull(task_ids="sum_of_squares") == {"n": 10, "sum_of_squares": 285}
    link = ti.xcom_pull(task_ids="sum_of_squares", key="ray_job")
    assert link["dashboard_url"] == ray_head.dashboard_url


# -- against the real head --------------------------------------------------------------


def test_a_successful_job_returns_its_result_through_xcom(airflow_db, ray_head):
    with _dag("rayops_test_success") as dag:
        SubmitRayJobOperator(
            task_id="echo",
            entrypoint=ECHO_ARGS,
            # Text reaches the job verbatim (config is data, never a template); run values resolve.
            job_args={
                "source": "file:///data/{{ dag.dag_id }}.parquet",
                "secret": "{{ conn.rayops_s3_test.password }}",
                "dag": RunFact("dag_id"),
                "epochs": TriggerParam("epochs", 3),
                "trigger": RunTrigger("kind"),
                "trigger_report": RunTrigger("report"),
            },
            entrypoint_num_cpus=0.1,
            compute=ray_head.compute,
            poll_interval=0.3,
        )
    run = _run(dag)
    ti = _only_ti(run)
    assert (run.state, ti.state) == ("success", "success")
    assert ti.xcom_pull(task_ids="echo") == {
        "echo": {
            "source": "file:///data/{{ dag.dag_id }}.parquet",
            "secret": "{{ conn.rayops_s3_test.password }}",
            "dag": "rayops_test_success",
            "epochs": 3,
            "trigger": "manual",  # dag.test() makes a manual run; the drift loop's is in test_production_path.py
            "trigger_report": None,
        }
    }
    link = ti.xcom_pull(task_ids="echo", key="ray_job")
    assert link["dashboard_url"] == ray_head.dashboard_url
    assert link["submission_id"].endswith("-1")
    assert link["submission_id"].startswith("rayops-rayops_test_success--echo--manual__")
    assert ti.xcom_pull(task_ids="echo", key="_link_RayJobLink") == link["job_url"]
    job = ray_head.client().get_job(link["submission_id"])
    assert job.status is JobStatus.SUCCEEDED
    assert job.metadata["rayops_task_id"] == "echo"
    assert job.metadata["rayops_deployment"] == "airflow" and job.metadata["rayops_try_number"] == "1"
    assert job.metadata["rayops_run_started"] == run.start_date.isoformat()


def test_non_deferrable_mode_waits_in_the_worker_and_streams_the_job_logs(airflow_db, ray_head, capsys):
    with _dag("rayops_test_blocking") as dag:
        SubmitRayJobOperator(
            task_id="blocking",
            entrypoint=_python('print("hello from ray", flush=True); import time; time.sleep(1)'),
            entrypoint_num_cpus=0.1,
            compute=ray_head.compute,
            deferrable=False,
            poll_interval=0.3,
        )
    run = _run(dag)
    out = capsys.readouterr().out
    assert _only_ti(run).state == "success"
    assert _only_ti(run).xcom_pull(task_ids="blocking") == {}
    assert "Pausing task as DEFERRED" not in out
    assert any("hello from ray" in line and "SubmitRayJobOperator" in line for line in out.splitlines())


def test_a_failing_job_fails_the_task_with_its_last_log_lines(airflow_db, ray_head):
    run, ti, exceptions = _run_one(
        "rayops_test_failure",
        entrypoint=_python('print("reading churn.parquet"); raise SystemExit("column churned is missing")'),
        compute=ray_head.compute,
    )
    assert (run.state, ti.state) == ("failed", "failed")
    (error,) = exceptions
    assert isinstance(error, RayJobFailed)
    assert error.status is JobStatus.FAILED
    assert error.last_log_lines[-2:] == ("reading churn.parquet", "column churned is missing")
    assert "exit code 1" in str(error) and "column churned is missing" in str(error)


def test_a_job_stopped_while_it_runs_fails_the_task_as_stopped(airflow_db, ray_head):
    failures = _Failures()
    dag_id = "rayops_test_stopped"
    with _dag(dag_id) as dag:
        SubmitRayJobOperator(
            task_id="sleeps",
            entrypoint=_python('print("started", flush=True); import time; time.sleep(600)'),
            entrypoint_num_cpus=0.1,
            compute=ray_head.compute,
            poll_interval=0.3,
            on_failure_callback=failures,
        )
    client = ray_head.client()

    seen_started: list[bool] = []

    def stop_once_started() -> None:
        sid = _wait_for_job(client, dag_id, JobStatus.RUNNING).submission_id
        deadline = time.monotonic() + 180  # a loaded 2-core machine can take long to start Python
        while "started" not in client.get_logs(sid) and time.monotonic() < deadline:
            time.sleep(0.2)
        seen_started.append("started" in client.get_logs(sid))
        client.stop(sid)

    stopper = threading.Thread(target=stop_once_started)
    stopper.start()
    run = _run(dag)
    stopper.join(timeout=240)
    assert seen_started == [True], "the job never printed 'started' before it was stopped"
    assert _only_ti(run).state == "failed"
    (error,) = failures.exceptions
    assert isinstance(error, RayJobFailed) and error.status is JobStatus.STOPPED
    assert "started" in error.last_log_lines


def test_on_kill_stops_the_job_the_task_waits_for(ray_head):
    op = SubmitRayJobOperator(
        task_id="killed",
        entrypoint=_python("import time; time.sleep(120)"),
        entrypoint_num_cpus=0.1,
        compute=ray_head.compute,
        deferrable=False,
        poll_interval=0.3,
    )
    dag_id = f"rayops_test_on_kill_{time.time_ns()}"
    pushed = {}
    ti = types.SimpleNamespace(
        dag_id=dag_id,
        run_id="manual__1",
        task_id="killed",
        map_index=-1,
        try_number=1,
        xcom_push=lambda key, value: pushed.__setitem__(key, value),
    )
    outcome: dict = {}

    def work():
        try:
            op.execute({"ti": ti})
        except BaseException as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=work)
    worker.start()
    job = _wait_for_job(ray_head.client(), dag_id, JobStatus.RUNNING)
    op.on_kill()
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert isinstance(outcome["error"], RayJobFailed) and outcome["error"].status is JobStatus.STOPPED
    assert ray_head.client().get_job(job.submission_id).status is JobStatus.STOPPED
    assert pushed["ray_job"]["submission_id"] == job.submission_id


class _WorkerLostOnFirstTry(SubmitRayJobOperator):
    """Dies like a lost worker right after submitting, on the first try only."""

    def defer(self, **kwargs):
        if self._try_number == 1:
            raise RuntimeError("worker lost")
        return super().defer(**kwargs)

    def execute(self, context):
        self._try_number = context["ti"].try_number
        return super().execute(context)


def test_a_retry_re_attaches_to_the_running_job_so_it_runs_once(airflow_db, ray_head, tmp_path):
    runs_file = tmp_path / "runs.txt"
    with _dag("rayops_test_reattach") as dag:
        _WorkerLostOnFirstTry(
            task_id="once",
            entrypoint=_python(
                f'open("{runs_file}", "a").write("ran\\n"); import time; time.sleep(3); '
                'from airflow_provider_rayops.jobs import report_result; report_result({"ok": True})'
            ),
            entrypoint_num_cpus=0.1,
            compute=ray_head.compute,
            poll_interval=0.3,
            retries=1,
            retry_delay=dt.timedelta(0),
            deferrable=True,
        )
    run = _run(dag)
    ti = _only_ti(run)
    assert (ti.state, ti.try_number) == ("success", 2)
    assert ti.xcom_pull(task_ids="once") == {"ok": True}
    assert runs_file.read_text() == "ran\n"
    sid = ti.xcom_pull(task_ids="once", key="ray_job")["submission_id"]
    base = sid.rsplit("-", 1)[0]
    assert sid == submission_id(base, 1)
    assert ray_head.client().get_job(submission_id(base, 1)).status is JobStatus.SUCCEEDED
    assert ray_head.client().get_job(submission_id(base, 2)) is None


def test_a_retry_after_a_failed_job_submits_a_new_one(airflow_db, ray_head, tmp_path):
    marker = tmp_path / "failed-once"
    with _dag("rayops_test_resubmit") as dag:
        SubmitRayJobOperator(
            task_id="flaky",
            entrypoint=_python(
                f'import pathlib, sys; m = pathlib.Path("{marker}"); first = not m.exists(); m.touch(); '
                'sys.exit("first attempt fails") if first else None; '
                'from airflow_provider_rayops.jobs import report_result; report_result({"attempt": 2})'
            ),
            entrypoint_num_cpus=0.1,
            compute=ray_head.compute,
            poll_interval=0.3,
            retries=1,
            retry_delay=dt.timedelta(0),
            deferrable=True,
        )
    run = _run(dag)
    ti = _only_ti(run)
    assert (ti.state, ti.try_number) == ("success", 2)
    assert ti.xcom_pull(task_ids="flaky") == {"attempt": 2}
    base = ti.xcom_pull(task_ids="flaky", key="ray_job")["submission_id"].rsplit("-", 1)[0]
    client = ray_head.client()
    assert client.get_job(submission_id(base, 1)).status is JobStatus.FAILED
    assert client.get_job(submission_id(base, 2)).status is JobStatus.SUCCEEDED
    assert ti.xcom_pull(task_ids="flaky", key="ray_job")["submission_id"] == submission_id(base, 2)


def test_execution_timeout_bounds_a_deferred_wait_and_stops_the_job(airflow_db, ray_head):
    """Airflow 3.3 does not apply execution_timeout to deferred time: the trigger enforces it."""
    _, ti, exceptions = _run_one(
        "rayops_test_timeout",
        task_id="slow",
        entrypoint=_python('print("started", flush=True); import time; time.sleep(300)'),
        compute=ray_head.compute,
        execution_timeout=dt.timedelta(seconds=6),
    )
    assert ti.state == "failed"
    [error] = exceptions
    assert type(error).__name__ == "AirflowTaskTimeout"
    assert "execution_timeout ran out while the job still ran; the Ray job was stopped" in str(error)
    sid = ti.xcom_pull(task_ids="slow", key="ray_job")["submission_id"]
    deadline = time.monotonic() + 30
    while ray_head.client().get_job(sid).status is not JobStatus.STOPPED:
        assert time.monotonic() < deadline
        time.sleep(0.3)


def test_the_ray_backend_submits_through_an_airflow_connection(airflow_db, ray_head, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_RAYOPS_TEST_CLUSTER",
        json.dumps({"conn_type": "rayops_ray", "host": ray_head.dashboard_url, "password": ray_head.endpoint.token}),
    )
    with _dag("rayops_test_ray_backend") as dag:
        SubmitRayJobOperator(
            task_id="remote",
            entrypoint=ECHO_ARGS,
            job_args={"where": "cluster"},
            entrypoint_num_cpus=0.1,
            compute={"backend": "ray", "conn_id": "rayops_test_cluster"},
            poll_interval=0.3,
        )
    run = _run(dag)
    ti = _only_ti(run)
    assert ti.state == "success"
    assert ti.xcom_pull(task_ids="remote") == {"echo": {"where": "cluster"}}
    assert ti.xcom_pull(task_ids="remote", key="ray_job")["dashboard_url"] == ray_head.dashboard_url


# -- job contracts ---------------------------------------------------------------------------


def test_a_contract_refuses_bad_arguments_before_anything_is_submitted(airflow_db, ray_head):
    from airflow_provider_rayops.jobs import contracts

    _, ti, exceptions = _run_one(
        "rayops_test_contract_args",
        task_id="ingest",
        entrypoint=ECHO_ARGS,
        job_args={"source": "file:///data/x.csv", "snapshot_root": "file:///snaps", "seed": "seven"},
        contract=contracts.INGEST,
        compute=ray_head.compute,
        retries=2,
    )
    assert (ti.state, ti.try_number) == ("failed", 1)  # not retried: the same args would fail again
    [error] = exceptions
    assert str(error) == "ingest job argument 'target' is required"  # the first of its two problems
    assert ti.xcom_pull(task_ids="ingest", key="ray_job") is None  # nothing was submitted


def test_a_result_off_its_contract_fails_the_task(airflow_db, ray_head):
    from airflow_provider_rayops.jobs import contracts

    _, ti, exceptions = _run_one(
        "rayops_test_contract_result",
        entrypoint=ECHO_ARGS,  # reports {"echo": args}: not an IngestResult
        job_args={"source": "file:///data/x.csv", "target": "y", "snapshot_root": "file:///snaps"},
        contract=contracts.INGEST,
        compute=ray_head.compute,
    )
    assert ti.state == "failed"
    [error] = exceptions
    assert type(error).__name__ == "JobResultInvalid"
    assert "does not fit the ingest job's contract: result field 'snapshot_uri' is required" in str(error)


def test_conn_id_defaults_agree_between_the_operator_and_the_hooks():
    """None is 'the embedded MLflow store' and 'no storage connection' for operator and hook alike;
    the Ray cluster defaults to the hook's default connection."""
    import inspect

    from airflow_provider_rayops.hooks.mlflow import MlflowHook
    from airflow_provider_rayops.hooks.s3 import S3StorageHook

    def default(callable_, name):
        return inspect.signature(callable_).parameters[name].default

    assert default(SubmitRayJobOperator.__init__, "mlflow_conn_id") is default(MlflowHook.__init__, "mlflow_conn_id") is None
    assert default(SubmitRayJobOperator.__init__, "storage_conn_id") is default(S3StorageHook.__init__, "s3_conn_id") is None
    assert SubmitRayJobOperator(task_id="t", entrypoint="true")._profile()["conn_id"] == default(RayHook.__init__, "ray_conn_id")
