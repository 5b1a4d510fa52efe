"""The embedded Ray head: token-protected, on 127.0.0.1, state in one folder, reused, stoppable."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest

from airflow_provider_rayops.backends import get_backend
from airflow_provider_rayops.backends.embedded_head import (
    MAX_TEMP_DIR_CHARS,
    EmbeddedHead,
    _kill_group,
    default_state_dir,
    lease_is_live,
    lease_name,
    private_dir,
    worst_case_lock_hold_s,
)
from airflow_provider_rayops.hooks.ray_jobs_api import BackendNotAvailable, JobStatus, RayJobsClient


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
    started_at = ray_head.backend.head.read_state().started_at
    endpoint = get_backend({"backend": "local"}).endpoint()
    assert endpoint.dashboard_url == ray_head.dashboard_url
    assert ray_head.backend.head.read_state().started_at == started_at


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
    backends = [EmbeddedHead(state_dir, num_cpus=1) for _ in range(2)]
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
        (state_dir / "leases" / lease_name(other_holder.pid)).touch()
        with backends[0].lease() as leased:
            assert leased == head
        assert backends[0].running() == head  # the other holder still lives

        other_holder.kill()
        other_holder.wait()
        with backends[1].lease():
            pass
        assert backends[1].running() is None  # the last holder stopped it
        assert not (state_dir / "head.json").exists()
        deadline = time.monotonic() + 15  # a loaded machine may take a moment to reap the group
        while time.monotonic() < deadline:
            try:
                os.kill(head.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        with pytest.raises(ProcessLookupError, match="No such process"):
            os.kill(head.pid, 0)
            print(_describe_process(head.pid))  # shown with the failure: what still has the pid
    finally:
        other_holder.kill()
        backends[0].stop()


def test_the_command_line_shows_where_the_head_is_but_not_its_token(ray_head, capsys):
    from airflow_provider_rayops import cli

    assert cli.main(["head", "status", "--state-dir", str(ray_head.backend.state_dir)]) == 0
    out = capsys.readouterr().out
    assert f"dashboard: {ray_head.dashboard_url}" in out
    assert str(ray_head.token_path) in out
    assert ray_head.endpoint.token not in out


# -- the state folder ---------------------------------------------------------------------------


def test_every_folder_created_for_the_state_is_private_and_an_existing_one_is_tightened(tmp_path):
    existing = tmp_path / "home"
    existing.mkdir(mode=0o755)
    os.chmod(existing, 0o755)
    state = existing / "a" / "b" / "ray"
    private_dir(state)
    for folder in (existing / "a", existing / "a" / "b", state):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert stat.S_IMODE(existing.stat().st_mode) == 0o755  # not ours to change: we did not create it
    os.chmod(state, 0o777)
    private_dir(state)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700


def test_a_folder_someone_else_owns_or_a_symlink_is_refused(tmp_path):
    link = tmp_path / "link"
    link.symlink_to(tmp_path)
    with pytest.raises(BackendNotAvailable, match="is a symlink"):
        private_dir(link)
    if os.geteuid() != 0:
        pytest.skip("changing a folder's owner needs root")
    theirs = tmp_path / "rayops-theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)  # nobody
    with pytest.raises(BackendNotAvailable, match=r"belongs to uid 65534, not to this user"):
        private_dir(theirs)


def test_the_short_temp_folder_under_tmp_is_refused_when_another_user_made_it(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("changing a folder's owner needs root")
    backend = EmbeddedHead(tmp_path / ("long-" * 12) / "ray")
    planted = backend._temp_dir()
    assert str(planted).startswith(tempfile.gettempdir())
    planted.mkdir(exist_ok=True)
    os.chown(planted, 65534, 65534)
    try:
        with pytest.raises(BackendNotAvailable, match="belongs to uid 65534"):
            backend.ensure_head()
    finally:
        planted.rmdir()


def test_a_lease_names_its_process_by_pid_and_start_time(tmp_path):
    holder = subprocess.Popen(["sleep", "60"])
    try:
        name = lease_name(holder.pid)
        assert lease_is_live(name)
        pid, _, started = name.partition("-")
        assert not lease_is_live(f"{pid}-{int(started) - 1}")  # the same pid, another process
        assert not lease_is_live(f"{pid}")  # an old-style lease: no start time
    finally:
        holder.kill()
        holder.wait()
    assert not lease_is_live(name)


def test_a_waiter_outlasts_a_holder_that_keeps_the_lock_for_the_worst_case(tmp_path):
    """The lock wait follows from the same bounds as the longest hold (it was 195 s against ~445 s)."""

    class Quick(EmbeddedHead):  # the real bounds scaled down to a fraction of a second
        start_timeout_s, stop_timeout_s, probe_timeout_s, kill_wait_s = 0.2, 0.1, 0.05, 0.05

    holder, waiter = (Quick(tmp_path / "ray") for _ in range(2))
    hold = worst_case_lock_hold_s(start=0.2, stop=0.1, probe=0.05, kill=0.05)
    assert waiter.lock_timeout_s > hold and EmbeddedHead(default_state_dir()).lock_timeout_s > worst_case_lock_hold_s()
    entered = threading.Event()

    def hold_lock():
        with holder._locked():
            entered.set()
            time.sleep(hold)

    thread = threading.Thread(target=hold_lock)
    thread.start()
    entered.wait(10)
    start = time.monotonic()
    with waiter._locked():
        waited = time.monotonic() - start
    thread.join()
    assert waited >= hold * 0.9


# -- a head of its own, started from an environment full of secrets -----------------------------------

CANARIES = {
    "AIRFLOW__CELERY__BROKER_URL": "redis://:broker-canary@127.0.0.1:1/0",
    "AIRFLOW__SECRETS__BACKEND_KWARGS": '{"token": "secrets-backend-canary"}',
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD": "echo sql-cmd-canary",
    "AWS_SECRET_ACCESS_KEY": "aws-canary",
    "GOOGLE_APPLICATION_CREDENTIALS": "/secrets/gcp-canary.json",
    "AZURE_CLIENT_SECRET": "azure-canary",
    "HTTPS_PROXY": "http://user:proxy-canary@proxy:3128",
}


@pytest.fixture(scope="module")
def spare_head(tmp_path_factory):
    """A head only these tests use (they stop its dashboard and kill it), started from an
    environment holding Airflow's settings, cloud credentials and a proxy password."""
    state_dir = tmp_path_factory.mktemp("spare") / "ray"
    backend = EmbeddedHead(state_dir, num_cpus=1, env=["TEAM_*"])
    backend.stop_timeout_s = 3.0  # no graceful drain needed
    saved = dict(os.environ)
    os.environ.update(CANARIES, TEAM_SETTING="team-value", RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.1")
    try:
        backend.ensure_head()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    yield backend
    backend.stop()


def test_jobs_inherit_only_the_allowed_environment(spare_head):
    status, logs = _run(
        RayJobsClient(spare_head.endpoint()),
        "env-" + str(time.time_ns()),
        "python -c 'import os; print(sorted(os.environ))'",
    )
    assert status is JobStatus.SUCCEEDED, logs
    status, values = _run(RayJobsClient(spare_head.endpoint()), "env-v-" + str(time.time_ns()), "env")
    for name, value in CANARIES.items():
        assert f"'{name}'" not in logs and value not in values, name
    assert "TEAM_SETTING=team-value" in values  # the profile's env: [TEAM_*]
    assert "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.1" in values  # Ray's own settings pass


def _describe_process(pid: int) -> str:
    """State and command line of a process, from /proc (for a failure message)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError as exc:
        return f"pid {pid}: {exc}"
    return f"pid {pid}: state {stat.rsplit(')', 1)[1].split()[0]}, cmdline {cmdline[:300]!r}"


def _dashboard_pid(backend: EmbeddedHead) -> int:
    port = backend.read_state().dashboard_url.rsplit(":", 1)[1]
    for proc in pathlib.Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            if any(part.endswith(b"dashboard/dashboard.py") for part in cmdline) and f"--port={port}".encode() in cmdline:
                return int(proc.name)
    raise AssertionError("no dashboard process found")


def test_a_submission_to_a_dashboard_that_stopped_answering_times_out(spare_head, tmp_path):
    client = RayJobsClient(spare_head.endpoint(), timeout_s=2)
    assert client.version()["ray_version"]  # it answered before it stalled
    pid = _dashboard_pid(spare_head)
    os.kill(pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        with pytest.raises(BackendNotAvailable, match="cannot reach the Ray dashboard"):
            client.submit(submission_id="hang-" + str(time.time_ns()), entrypoint="true")
        assert time.monotonic() - start < 30  # Ray's own client would wait forever
        with pytest.raises(BackendNotAvailable, match="cannot reach the Ray dashboard"):
            # A local working_dir is packed and uploaded first, with our timeout too.
            client.submit(
                submission_id="hang-up-" + str(time.time_ns()), entrypoint="true", runtime_env={"working_dir": str(tmp_path)}
            )
        assert time.monotonic() - start < 60
    finally:
        os.kill(pid, signal.SIGCONT)


def test_a_head_that_dies_while_a_task_waits_ends_it_within_the_bound(spare_head):
    from airflow_provider_rayops.triggers.ray_job import RayJobTrigger

    sid = "dies-" + str(time.time_ns())
    RayJobsClient(spare_head.endpoint()).submit(
        submission_id=sid, entrypoint="python -c 'import time; time.sleep(300)'", entrypoint_num_cpus=0.1
    )
    trigger = RayJobTrigger(
        submission_id=sid,
        compute={"backend": "local", "state_dir": str(spare_head.state_dir)},
        poll_interval=0.3,
        unreachable_timeout=3,
    )
    killer = threading.Timer(3.0, lambda: _kill_group(spare_head.read_state().pid))
    killer.start()
    start = time.monotonic()
    outcome = asyncio.run(trigger.follow())
    elapsed = time.monotonic() - start
    killer.join()
    assert outcome.status == "ERROR"
    assert "the Ray dashboard did not answer for" in outcome.message and "(limit 3s)" in outcome.message
    assert elapsed < 60, elapsed


def test_a_recorded_head_that_died_is_replaced_by_a_new_one(spare_head):
    """head.json still names a head whose processes are gone (killed above, or the machine
    rebooted): the next job starts a new head instead of failing on the old address."""
    dead = spare_head.read_state()
    assert dead is not None
    _kill_group(dead.pid)  # whether or not the test above already did
    assert spare_head.running() is None
    fresh = spare_head.ensure_head()
    assert fresh.pid != dead.pid and spare_head.read_state() == fresh
    status, logs = _run(RayJobsClient(spare_head.endpoint()), "after-restart-" + str(time.time_ns()), "echo alive-again")
    assert status is JobStatus.SUCCEEDED and "alive-again" in logs


def test_a_head_that_exited_by_itself_is_reaped_when_stopped(tmp_path):
    """Its zombie has no command line, and cannot be reaped until all its threads have exited;
    it must be reaped all the same, or its pid keeps answering signals (a full-suite failure under load)."""
    backend = EmbeddedHead(tmp_path / "ray", num_cpus=1)
    backend.stop_timeout_s = 3.0
    head = backend.ensure_head()
    os.killpg(head.pid, signal.SIGKILL)  # no reap here: the head is left a zombie of this process
    deadline = time.monotonic() + 15
    while pathlib.Path(f"/proc/{head.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, _describe_process(head.pid)
        time.sleep(0.1)
    assert backend.stop() is True
    with pytest.raises(ProcessLookupError, match="No such process"):
        os.kill(head.pid, 0)
