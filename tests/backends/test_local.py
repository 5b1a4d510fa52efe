"""The embedded Ray head: token-protected, on 127.0.0.1, state in one folder, reused, stoppable."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from airflow_provider_rayops.backends import get_backend
from airflow_provider_rayops.backends.base import JobStatus
from airflow_provider_rayops.backends.jobs_api import RayJobsClient
from airflow_provider_rayops.backends.local import MAX_TEMP_DIR_CHARS, LocalBackend
from airflow_provider_rayops.config.compute import LocalProfile


def _status(url: str, headers: dict | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _run(client: RayJobsClient, submission_id: str, entrypoint: str, timeout: float = 60) -> tuple[JobStatus, str]:
    client.submit(submission_id=submission_id, entrypoint=entrypoint, entrypoint_num_cpus=0.1)
    deadline = time.monotonic() + timeout
    while not (info := client.get_job(submission_id)).status.is_terminal():
        assert time.monotonic() < deadline, f"job {submission_id} still {info.status}"
        time.sleep(0.3)
    return info.status, client.get_logs(submission_id)


def test_the_jobs_api_refuses_requests_without_the_token(ray_head):
    assert _status(ray_head.dashboard_url + "/api/jobs/") == 401


def test_the_jobs_api_refuses_a_wrong_token(ray_head):
    assert _status(ray_head.dashboard_url + "/api/jobs/", {"Authorization": "Bearer not-the-token"}) == 403


def test_the_jobs_api_answers_with_the_token(ray_head):
    assert _status(ray_head.dashboard_url + "/api/jobs/", ray_head.endpoint.headers()) == 200


def test_the_token_is_generated_once_and_readable_only_by_its_owner(ray_head):
    mode = stat.S_IMODE(ray_head.token_path.stat().st_mode)
    assert mode == 0o600
    assert len(ray_head.token_path.read_text().strip()) == 64


def test_the_head_is_recorded_in_the_state_folder_on_loopback(ray_head):
    state = json.loads((ray_head.backend.state_dir / "head.json").read_text())
    assert state["dashboard_url"].startswith("http://127.0.0.1:")
    assert state["gcs_address"].startswith("127.0.0.1:")
    assert len(state["temp_dir"]) <= MAX_TEMP_DIR_CHARS


def test_the_default_profile_reuses_the_running_head(ray_head):
    started_at = ray_head.backend.read_state().started_at
    endpoint = get_backend({"backend": "local"}).endpoint()
    assert endpoint.dashboard_url == ray_head.dashboard_url
    assert ray_head.backend.read_state().started_at == started_at


def test_jobs_run_this_python_and_never_see_the_token(ray_head):
    status, logs = _run(
        ray_head.client(),
        "local-env-1-" + str(time.time_ns()),
        "python -c 'import os, sys; print(\"exe=\" + sys.executable); print(sorted(os.environ.items()))'",
    )
    assert status is JobStatus.SUCCEEDED, logs
    assert f"exe={os.path.join(os.path.dirname(sys.executable), 'python')}" in logs
    assert ray_head.endpoint.token not in logs
    assert "RAY_AUTH_TOKEN'" not in logs  # only RAY_AUTH_TOKEN_PATH, a file path


def test_a_job_can_use_ray_inside_the_token_protected_cluster(ray_head):
    status, logs = _run(
        ray_head.client(),
        "local-ray-init-" + str(time.time_ns()),
        "python -c 'import ray; ray.init(); print(\"answer\", ray.get(ray.remote(lambda: 41 + 1).options(num_cpus=0.1).remote()))'",
    )
    assert status is JobStatus.SUCCEEDED, logs
    assert "answer 42" in logs


def test_one_head_per_state_folder_kept_up_while_any_process_holds_a_lease(tmp_path):
    # A long state path also checks the short temp dir fallback (Unix socket paths).
    state_dir = tmp_path / ("deep-" * 12) / "ray"
    backends = [LocalBackend(LocalProfile(backend="local", num_cpus=1, state_dir=str(state_dir))) for _ in range(2)]
    states = [None, None]

    def start(i: int) -> None:
        states[i] = backends[i].ensure_head()

    other_holder = subprocess.Popen(["sleep", "120"])
    try:
        threads = [threading.Thread(target=start, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
        head = states[0]
        assert head is not None and head == states[1]  # concurrent starts made one head
        assert len(head.temp_dir) <= MAX_TEMP_DIR_CHARS and not head.temp_dir.startswith(str(state_dir))
        assert json.loads((state_dir / "head.json").read_text())["temp_dir"] == head.temp_dir

        (state_dir / "leases").mkdir(exist_ok=True)
        (state_dir / "leases" / str(other_holder.pid)).touch()
        with backends[0].lease() as leased:
            assert leased == head
        assert backends[0].running() == head  # the other holder still lives

        other_holder.kill()
        other_holder.wait()
        with backends[1].lease():
            pass
        assert backends[1].running() is None  # the last holder stopped it
        assert not (state_dir / "head.json").exists()
        with pytest.raises(ProcessLookupError):
            os.kill(head.pid, 0)
    finally:
        other_holder.kill()
        backends[0].stop()


def test_the_command_line_shows_where_the_head_is_but_not_its_token(ray_head):
    proc = subprocess.run(
        [sys.executable, "-m", "airflow_provider_rayops.backends.local", "status", "--state-dir", str(ray_head.backend.state_dir)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"dashboard: {ray_head.dashboard_url}" in proc.stdout
    assert str(ray_head.token_path) in proc.stdout
    assert ray_head.endpoint.token not in proc.stdout
