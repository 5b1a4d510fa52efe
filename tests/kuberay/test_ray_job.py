"""SubmitRayJobOperator on the kuberay backend, against the simulated Kubernetes API and KubeRay.

What is simulated (tests/fixtures/kube_api.py): the API server (it checks every object against
KubeRay v1.7's CRD schemas) and KubeRay's RayJob controller, which runs each job for real on the
session's Ray head and reports that head as the job's cluster. What is real: Airflow (dag.test(),
the trigger run inline), the cncf-kubernetes provider's hooks and the `kubernetes` clients, the
Ray job, its log and its result.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
import types

import pytest
import yaml

from airflow_provider_rayops.backends.kuberay.manifests import LABEL_OWNER, RAYJOBS
from airflow_provider_rayops.hooks.ray_jobs_api import JobStatus, RayJobFailed
from airflow_provider_rayops.operators.ray_job import SubmitRayJobOperator
from airflow_provider_rayops.triggers.kuberay_job import KubeRayJobTrigger
from tests.fixtures.helm import chart_grants, helm
from tests.fixtures.kube_api import rbac_needs
from tests.operators.test_ray_job import ECHO_ARGS, _dag, _only_ti, _python, _run, _run_one, _WorkerLostOnFirstTry

NAMESPACE = "ml"


def _profile(kuberay, **changes) -> dict:
    return {
        "backend": "kuberay",
        "conn_id": kuberay.conn_id,
        "namespace": NAMESPACE,
        "image": "ghcr.io/acme/rayops:0.1.0",
        "head": {"cpu": 2, "memory": "8Gi"},
        "worker_groups": [
            {
                "name": "gpu",
                "replicas": {"min": 0, "max": 2},
                "cpu": 8,
                "memory": "32Gi",
                "gpu": 1,
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            }
        ],
        **changes,
    }


def _ray_jobs(kuberay, dag_id: str) -> list[dict]:
    return sorted(
        (o for o in kuberay.api.list(RAYJOBS, NAMESPACE) if o["spec"]["metadata"].get("rayops_dag_id") == dag_id),
        key=lambda o: o["metadata"]["name"],
    )


def _wait_for_status(ray_head, job_id: str, status: JobStatus, timeout_s: float = 30) -> None:
    """Stopping a Ray job takes a moment after the request (its driver gets SIGTERM first)."""
    deadline = time.monotonic() + timeout_s
    while ray_head.client().get_job(job_id).status is not status and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray_head.client().get_job(job_id).status is status


def test_a_job_runs_as_a_rayjob_and_its_result_comes_back_through_xcom(airflow_db, kuberay, ray_head, monkeypatch):
    storage = {
        "conn_type": "rayops_s3",
        "host": "http://minio.data.svc:9000",
        "login": "rayops",
        "password": "s3-secret-key-7f3a",
    }
    monkeypatch.setenv("AIRFLOW_CONN_RAYOPS_S3_KUBE", json.dumps(storage))
    run, ti, exceptions = _run_one(
        "rayops_test_kuberay_ok",
        task_id="train",
        entrypoint=ECHO_ARGS,
        job_args={"epochs": 3},
        compute=_profile(kuberay),
        storage_conn_id="rayops_s3_kube",
    )
    assert (ti.state, exceptions) == ("success", [])
    assert ti.xcom_pull(task_ids="train") == {"echo": {"epochs": 3}}
    (ray_job,) = _ray_jobs(kuberay, "rayops_test_kuberay_ok")
    assert ray_job["status"]["jobDeploymentStatus"] == "Complete"
    # The job KubeRay submitted is the one Airflow named, and it ran on the cluster once.
    job_id = ray_job["spec"]["jobId"]
    assert ray_head.client().get_job(job_id).status is JobStatus.SUCCEEDED
    assert ray_job["metadata"]["name"].startswith("rayops-test-kuberay-ok-train-")
    owner = ray_job["metadata"]["labels"][LABEL_OWNER]  # the task instance's digest; its first 10 digits name the RayJob
    assert len(owner) == 20 and ray_job["metadata"]["name"].endswith(f"-{owner[:10]}-1")
    assert ray_job["metadata"]["annotations"]["rayops.io/run-id"] == run.run_id
    # Nothing secret in the RayJob: the job's settings and the storage endpoint are there, the keys are not.
    env = yaml.safe_load(ray_job["spec"]["runtimeEnvYAML"])["env_vars"]
    assert env["RAYOPS_S3_ENDPOINT_URL"] == "http://minio.data.svc:9000"
    assert "s3-secret-key-7f3a" not in json.dumps(ray_job) and "AWS_ACCESS_KEY_ID" not in env
    assert json.loads(env["RAYOPS_JOB_ARGS"]) == {"epochs": 3}


def test_an_application_failure_fails_the_task_with_the_jobs_last_lines(airflow_db, kuberay):
    _, ti, exceptions = _run_one(
        "rayops_test_kuberay_app_failed",
        task_id="train",
        entrypoint=_python('print("loading data", flush=True); raise SystemExit("column churned is missing")'),
        compute=_profile(kuberay),
    )
    assert ti.state == "failed"
    (error,) = exceptions
    assert isinstance(error, RayJobFailed) and error.status is JobStatus.FAILED
    assert "FAILED: the Ray job failed [RayJob rayops-test-kuberay-app-failed-" in str(error)
    assert "reason AppFailed]" in str(error)
    assert "column churned is missing" in "\n".join(error.last_log_lines)
    assert "loading data" in "\n".join(error.last_log_lines)


def test_the_tasks_execution_timeout_becomes_the_rayjobs_deadline(airflow_db, kuberay, ray_head):
    _, ti, exceptions = _run_one(
        "rayops_test_kuberay_deadline",
        task_id="slow",
        entrypoint=_python('print("started", flush=True); import time; time.sleep(300)'),
        compute=_profile(kuberay),
        execution_timeout=dt.timedelta(seconds=6),
    )
    assert ti.state == "failed"
    (error,) = exceptions
    assert type(error).__name__ == "AirflowTaskTimeout"
    assert "execution_timeout ran out while the job still ran (the RayJob's activeDeadlineSeconds)" in str(error)
    # KubeRay ends the RayJob without stopping its job: the trigger stops it.
    assert "its Ray job was stopped" in str(error)
    (ray_job,) = _ray_jobs(kuberay, "rayops_test_kuberay_deadline")
    assert ray_job["spec"]["activeDeadlineSeconds"] <= 7
    assert (ray_job["status"]["jobDeploymentStatus"], ray_job["status"]["reason"]) == ("Failed", "DeadlineExceeded")
    _wait_for_status(ray_head, ray_job["spec"]["jobId"], JobStatus.STOPPED)


def test_the_profiles_own_deadline_is_a_job_failure_not_a_task_timeout(airflow_db, kuberay):
    _, _ti, exceptions = _run_one(
        "rayops_test_kuberay_profile_deadline",
        task_id="slow",
        entrypoint=_python("import time; time.sleep(300)"),
        compute=_profile(kuberay, active_deadline_s=3),
    )
    (error,) = exceptions
    assert isinstance(error, RayJobFailed)
    assert "the RayJob ran past the profile's active_deadline_s (activeDeadlineSeconds)" in str(error)
    assert "its Ray job was stopped" in str(error)


def test_pods_that_never_start_fail_at_the_pre_running_deadline_naming_the_likely_causes(airflow_db, kuberay):
    kuberay.controller.script(lambda o: o["spec"]["metadata"]["rayops_dag_id"] == "rayops_test_kuberay_pending", "pending")
    _, _ti, exceptions = _run_one(
        "rayops_test_kuberay_pending",
        task_id="train",
        entrypoint=ECHO_ARGS,
        compute=_profile(kuberay, pre_running_deadline_s=2),
    )
    (error,) = exceptions
    assert isinstance(error, RayJobFailed)
    assert "did not start running within preRunningDeadlineSeconds" in str(error)
    assert "no node fits the GPU request or node selector" in str(error)
    # Nothing ran, so nothing to stop through a dashboard: the RayJob (and its pending pods) is deleted.
    assert "was deleted with its cluster" in str(error)
    assert _ray_jobs(kuberay, "rayops_test_kuberay_pending") == []


def test_a_failed_submission_is_retried_as_a_new_rayjob(airflow_db, kuberay):
    dag_id = "rayops_test_kuberay_submission"
    failed_once: list[str] = []

    def first_only(obj: dict) -> bool:
        if obj["spec"]["metadata"]["rayops_dag_id"] != dag_id:
            return False
        if not failed_once or failed_once[0] == obj["metadata"]["name"]:
            failed_once[:1] = [obj["metadata"]["name"]]
            return True
        return False

    kuberay.controller.script(first_only, "submission_failed")
    _, ti, _exceptions = _run_one(dag_id, task_id="train", entrypoint=ECHO_ARGS, job_args={"n": 1}, compute=_profile(kuberay),
                                 retries=1, retry_delay=dt.timedelta(0))  # fmt: skip
    assert (ti.state, ti.try_number) == ("success", 2)
    first, second = _ray_jobs(kuberay, dag_id)
    assert first["metadata"]["name"].endswith("-1") and second["metadata"]["name"].endswith("-2")
    assert first["status"]["reason"] == "SubmissionFailed"
    assert second["status"]["jobDeploymentStatus"] == "Complete"


def test_a_rayjob_kuberay_refuses_fails_the_task_without_a_retry(airflow_db, kuberay):
    dag_id = "rayops_test_kuberay_invalid"
    kuberay.controller.script(
        lambda o: o["spec"]["metadata"]["rayops_dag_id"] == dag_id,
        "validation_failed",
        "The RayJob spec is invalid: worker group gpu cannot be suspended with Autoscaler enabled",
    )
    _, ti, exceptions = _run_one(dag_id, task_id="train", entrypoint=ECHO_ARGS, compute=_profile(kuberay), retries=3)
    assert (ti.state, ti.try_number) == ("failed", 1)
    (error,) = exceptions
    assert type(error).__name__ == "AirflowFailException"
    assert "KubeRay refused the RayJob" in str(error)
    assert "cannot be suspended with Autoscaler enabled" in str(error)
    (ray_job,) = _ray_jobs(kuberay, dag_id)
    assert ray_job["status"]["jobDeploymentStatus"] == "ValidationFailed"  # KubeRay's own status, not Failed


def test_a_manifest_the_api_server_refuses_is_an_error_with_its_reasons(kuberay):
    from airflow_provider_rayops.backends.kuberay.client import KubeRayClient, ResourceRefused

    manifest = {"apiVersion": "ray.io/v1", "kind": "RayJob", "metadata": {"name": "typo"},
                "spec": {"entrypoint": "python -m x", "shutdownAfterJobFinish": True}}  # fmt: skip
    with pytest.raises(ResourceRefused) as refused:
        KubeRayClient(kuberay.conn_id, NAMESPACE).create(RAYJOBS, manifest)
    assert "Kubernetes refused rayjobs typo in namespace ml" in str(refused.value)
    assert "'shutdownAfterJobFinish' was unexpected" in str(refused.value)


def test_a_retry_re_attaches_to_the_running_rayjob_instead_of_creating_a_second_cluster(airflow_db, kuberay, tmp_path):
    runs_file = tmp_path / "runs.txt"
    dag_id = "rayops_test_kuberay_reattach"
    with _dag(dag_id) as dag:
        _WorkerLostOnFirstTry(
            task_id="once",
            entrypoint=_python(
                f'open("{runs_file}", "a").write("ran\\n"); import time; time.sleep(3); '
                'from airflow_provider_rayops.jobs import report_result; report_result({"ok": True})'
            ),
            entrypoint_num_cpus=0.1,
            compute=_profile(kuberay),
            poll_interval=0.3,
            retries=1,
            retry_delay=dt.timedelta(0),
            deferrable=True,
        )
    ti = _only_ti(_run(dag))
    assert (ti.state, ti.try_number) == ("success", 2)
    assert ti.xcom_pull(task_ids="once") == {"ok": True}
    assert runs_file.read_text() == "ran\n"
    assert [o["metadata"]["name"][-2:] for o in _ray_jobs(kuberay, dag_id)] == ["-1"]


def test_a_rayjob_of_this_tasks_name_but_another_owner_is_not_re_attached(kuberay):
    from airflow_provider_rayops.backends import parse_profile
    from airflow_provider_rayops.backends.kuberay.manifests import RayJobRequest, ray_job
    from airflow_provider_rayops.operators.ray_job import JobIdentity, deployment_id

    profile = _profile(kuberay)
    dag_id = f"rayops_test_kuberay_owner_{time.time_ns() % 10**8}"
    ti = types.SimpleNamespace(dag_id=dag_id, run_id="manual__1", task_id="train", map_index=-1, try_number=1, max_tries=0,
                               xcom_push=lambda key, value: None)  # fmt: skip
    mine = JobIdentity.of({"ti": ti}, deployment=deployment_id())
    squatter = ray_job(
        parse_profile(profile),
        RayJobRequest(
            name=mine.resource_name(1), job_id="someone-elses", entrypoint="sleep 1", labels={LABEL_OWNER: "someone-else"}
        ),
    )
    kuberay.api.create_object(RAYJOBS, NAMESPACE, squatter)
    kuberay.controller.script(lambda o: o["spec"]["jobId"] == "someone-elses", "pending")
    op = SubmitRayJobOperator(
        task_id="train", entrypoint=ECHO_ARGS, job_args={"x": 1}, compute=profile, deferrable=False, poll_interval=0.3
    )
    op.render_template_fields({"ti": ti})
    assert op.execute({"ti": ti}) == {"echo": {"x": 1}}
    ours = kuberay.api.get(RAYJOBS, NAMESPACE, mine.resource_name(2))
    assert ours["metadata"]["labels"][LABEL_OWNER] == mine.digest
    assert kuberay.api.get(RAYJOBS, NAMESPACE, mine.resource_name(1))["spec"]["jobId"] == "someone-elses"


def test_killing_the_task_deletes_its_rayjob_and_so_stops_the_job(kuberay, ray_head):
    profile = _profile(kuberay)
    name = f"killed-{time.time_ns() % 10**8}"
    from airflow_provider_rayops.backends import parse_profile
    from airflow_provider_rayops.backends.kuberay.manifests import RayJobRequest, ray_job

    job_id = f"rayops-{name}-1"
    kuberay.api.create_object(
        RAYJOBS,
        NAMESPACE,
        ray_job(
            parse_profile(profile), RayJobRequest(name=name, job_id=job_id, entrypoint=_python("import time; time.sleep(120)"))
        ),
    )
    trigger = KubeRayJobTrigger(name=name, submission_id=job_id, compute=profile, poll_interval=0.2)

    async def follow_then_kill():
        follower = asyncio.create_task(trigger.follow())
        for _ in range(300):
            job = ray_head.client().get_job(job_id)
            if job is not None and job.status is JobStatus.RUNNING:
                break
            await asyncio.sleep(0.1)
        await trigger.on_kill()
        return await asyncio.wait_for(follower, timeout=30)

    outcome = asyncio.run(follow_then_kill())
    assert outcome.status == "ERROR"
    assert f"RayJob {NAMESPACE}/{name} was deleted before its job ended" in outcome.message
    assert kuberay.api.get(RAYJOBS, NAMESPACE, name) is None
    _wait_for_status(ray_head, job_id, JobStatus.STOPPED)


def test_a_profile_naming_a_long_lived_cluster_runs_there_and_deletes_only_its_rayjob(airflow_db, kuberay):
    kuberay.api.create_object(
        "rayclusters",
        NAMESPACE,
        {
            "apiVersion": "ray.io/v1",
            "kind": "RayCluster",
            "metadata": {"name": "shared-gpu", "namespace": NAMESPACE},
            "spec": {
                "rayVersion": "2.60.0",
                "headGroupSpec": {
                    "rayStartParams": {},
                    "template": {"spec": {"containers": [{"name": "ray-head", "image": "ghcr.io/acme/rayops:0.1.0"}]}},
                },
            },
        },
    )
    profile = {k: v for k, v in _profile(kuberay, cluster="shared-gpu").items() if k != "worker_groups"}
    _, ti, exceptions = _run_one(
        "rayops_test_kuberay_selector", task_id="train", entrypoint=ECHO_ARGS, job_args={"a": 1}, compute=profile
    )
    assert (ti.state, exceptions) == ("success", [])
    assert ti.xcom_pull(task_ids="train") == {"echo": {"a": 1}}
    # KubeRay cleans up nothing on a selected cluster: the trigger deleted the RayJob once it had the result.
    (key,) = [k for k in kuberay.api.deleted if k[0] == RAYJOBS and k[2].startswith("rayops-test-kuberay-selector-")]
    (spec,) = kuberay.api.spec_history[key]
    assert spec["clusterSelector"] == {"ray.io/cluster": "shared-gpu"}
    assert not {"rayClusterSpec", "deletionStrategy", "backoffLimit"} & set(spec)
    assert kuberay.api.get("rayclusters", NAMESPACE, "shared-gpu") is not None


def test_credentials_the_api_server_does_not_accept_fail_the_task_naming_the_connection(airflow_db, kuberay, monkeypatch):
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{kuberay.conn_id.upper()}", kuberay.api.connection_env().replace(kuberay.api.token, "stale")
    )
    _, ti, exceptions = _run_one("rayops_test_kuberay_401", task_id="train", entrypoint=ECHO_ARGS, compute=_profile(kuberay))
    assert ti.state == "failed"
    (error,) = exceptions
    assert str(error).startswith(
        f"Kubernetes did not accept the credentials of connection {kuberay.conn_id} to list rayjobs labelled rayops.io/owner="
    )


def test_every_request_of_a_job_and_of_its_kill_is_granted_by_the_charts_role(airflow_db, kuberay, helm, ray_head):
    asked_from = len(kuberay.api.requests)
    _run_one("rayops_test_kuberay_rbac", task_id="train", entrypoint=ECHO_ARGS, compute=_profile(kuberay))
    (ray_job,) = _ray_jobs(kuberay, "rayops_test_kuberay_rbac")
    trigger = KubeRayJobTrigger(
        name=ray_job["metadata"]["name"], submission_id=ray_job["spec"]["jobId"], compute=_profile(kuberay)
    )
    asyncio.run(trigger.on_kill())
    needs = rbac_needs(kuberay.api.requests[asked_from:])
    assert {("get", "rayjobs"), ("create", "rayjobs"), ("delete", "rayjobs")} <= needs
    granted = chart_grants(helm, NAMESPACE)
    assert needs <= granted, needs - granted
