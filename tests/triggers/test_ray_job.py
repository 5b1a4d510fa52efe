"""RayJobTrigger against the session's real Ray head, driven directly with asyncio."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import importlib
import json
import socket
import threading
import time
import urllib.request
import uuid

import pytest
import requests

from airflow_provider_rayops.hooks.ray_jobs_api import JobStatus
from airflow_provider_rayops.triggers.ray_job import RayJobTrigger

SUCCEEDS = (
    'python -c \'import time; print("step one", flush=True); time.sleep(1.5); print("step two");'
    ' from airflow_provider_rayops.jobs import report_result; report_result({"uri": "file:///out", "auc": 0.9})\''
)
FAILS = 'python -c \'print("loading data"); raise SystemExit("ValueError: column churned is missing")\''
SLEEPS = "python -c 'import time; print(\"sleeping\", flush=True); time.sleep(60)'"


def _submit(ray_head, entrypoint: str) -> str:
    sid = f"trigger-test-{uuid.uuid4().hex[:8]}"
    ray_head.client().submit(submission_id=sid, entrypoint=entrypoint, entrypoint_num_cpus=0.1)
    return sid


def _wait_status(ray_head, sid: str, wanted: JobStatus, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while ray_head.client().get_job(sid).status is not wanted:
        assert time.monotonic() < deadline, f"{sid} never reached {wanted}"
        time.sleep(0.2)


def _wait_log(ray_head, sid: str, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in ray_head.client().get_logs(sid):
        assert time.monotonic() < deadline, f"{sid} never logged {text!r}"
        time.sleep(0.2)


@contextlib.contextmanager
def _no_blocking_calls_in(thread: threading.Thread):
    """Make the usual blocking calls fail when made from `thread` (the event loop's)."""
    patched = {
        (time, "sleep"): time.sleep,
        (requests.Session, "request"): requests.Session.request,
        (urllib.request, "urlopen"): urllib.request.urlopen,
        (socket, "create_connection"): socket.create_connection,
        (builtins, "open"): builtins.open,
    }

    def guard(name, original):
        def wrapper(*args, **kwargs):
            if threading.current_thread() is thread:
                raise AssertionError(f"blocking call {name} in the event loop")
            return original(*args, **kwargs)

        return wrapper

    for (owner, name), original in patched.items():
        setattr(owner, name, guard(name, original))
    try:
        yield
    finally:
        for (owner, name), original in patched.items():
            setattr(owner, name, original)


def _run_trigger(trigger: RayJobTrigger) -> tuple[list, float]:
    """All events the trigger yields (run to exhaustion), and the longest stall of the event loop."""

    async def main():
        stop = asyncio.Event()
        gaps = []

        async def heartbeat():
            loop = asyncio.get_running_loop()
            last = loop.time()
            while not stop.is_set():
                await asyncio.sleep(0.01)
                now = loop.time()
                gaps.append(now - last)
                last = now

        beat = asyncio.create_task(heartbeat())
        with _no_blocking_calls_in(threading.current_thread()):
            events = [event async for event in trigger.run()]
        stop.set()
        await beat
        return events, max(gaps, default=0.0)

    return asyncio.run(main())


def test_serialize_round_trips_through_an_importable_class_with_plain_kwargs(ray_head):
    trigger = RayJobTrigger(submission_id="s-1", compute=ray_head.compute, poll_interval=0.5)
    classpath, kwargs = trigger.serialize()
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert ray_head.endpoint.token not in json.dumps(kwargs)


def test_a_succeeding_job_gives_one_event_with_its_result(ray_head):
    sid = _submit(ray_head, SUCCEEDS)
    events, longest_stall = _run_trigger(RayJobTrigger(submission_id=sid, compute=ray_head.compute, poll_interval=0.3))
    assert len(events) == 1
    assert events[0].payload == {
        "submission_id": sid,
        "status": "SUCCEEDED",
        "dashboard_url": ray_head.dashboard_url,
        "message": "Job finished successfully.",
        "result": {"uri": "file:///out", "auc": 0.9},
        "last_log_lines": [],
    }
    assert longest_stall < 0.5


class _Recorder:
    """A logger for `follow(log=...)` that records lines and acts when one appears."""

    def __init__(self, when: str, then) -> None:
        self.lines: list[str] = []
        self.when, self.then = when, then

    def info(self, message, *args):
        line = message % args if args else message
        self.lines.append(line)
        if line == self.when:
            self.then()

    warning = error = debug = info


def test_log_lines_reach_the_task_log_while_the_job_still_runs(ray_head, tmp_path):
    """The job prints "step one", then waits for the test to have seen it before "step two":
    the run only succeeds if lines arrive while it runs, whatever the machine's speed."""
    seen = tmp_path / "seen"
    code = (
        'import pathlib, sys, time; print("step one", flush=True); deadline = time.time() + 120\n'
        f'while not pathlib.Path("{seen}").exists():\n'
        "    time.sleep(0.1)\n"
        '    if time.time() > deadline: sys.exit("step one never reached the log")\n'
        'print("step two", flush=True)'
    )
    sid = _submit(ray_head, f"python -c '{code}'")
    log = _Recorder("step one", seen.touch)
    outcome = asyncio.run(RayJobTrigger(submission_id=sid, compute=ray_head.compute, poll_interval=0.3).follow(log=log))
    assert outcome.status == "SUCCEEDED", outcome.last_log_lines
    assert log.lines.index("step one") < log.lines.index("step two")


def test_a_failing_job_gives_its_last_log_lines_in_the_event(ray_head):
    sid = _submit(ray_head, FAILS)
    events, _ = _run_trigger(RayJobTrigger(submission_id=sid, compute=ray_head.compute, poll_interval=0.3))
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "FAILED"
    assert payload["result"] is None
    assert "exit code 1" in payload["message"]
    assert payload["last_log_lines"][-2:] == ["loading data", "ValueError: column churned is missing"]


def test_a_job_stopped_while_followed_ends_the_trigger_as_stopped(ray_head):
    sid = _submit(ray_head, SLEEPS)
    _wait_log(ray_head, sid, "sleeping")
    threading.Timer(1.0, ray_head.client().stop, args=(sid,)).start()
    events, _ = _run_trigger(RayJobTrigger(submission_id=sid, compute=ray_head.compute, poll_interval=0.3))
    assert [e.payload["status"] for e in events] == ["STOPPED"]
    assert "sleeping" in events[0].payload["last_log_lines"]


def test_on_kill_stops_the_job(ray_head):
    sid = _submit(ray_head, SLEEPS)
    _wait_status(ray_head, sid, JobStatus.RUNNING)
    asyncio.run(RayJobTrigger(submission_id=sid, compute=ray_head.compute).on_kill())
    _wait_status(ray_head, sid, JobStatus.STOPPED, timeout=30)


def test_an_unknown_job_is_an_error_event(ray_head):
    events, _ = _run_trigger(RayJobTrigger(submission_id="never-submitted", compute=ray_head.compute))
    assert len(events) == 1
    assert events[0].payload["status"] == "ERROR"
    assert "has no job never-submitted" in events[0].payload["message"]


def test_a_local_profile_without_a_recorded_head_is_an_error_event_and_starts_nothing(tmp_path):
    compute = {"backend": "local", "state_dir": str(tmp_path / "nothing-here")}
    events, _ = _run_trigger(RayJobTrigger(submission_id="s-1", compute=compute))
    assert events[0].payload["status"] == "ERROR"
    assert "no embedded Ray head is recorded" in events[0].payload["message"]
    assert not (tmp_path / "nothing-here" / "head.json").exists()


def test_the_ray_backend_resolves_its_connection_inside_the_trigger(ray_head, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_RAYOPS_TRIGGER_TEST",
        json.dumps({"conn_type": "rayops_ray", "host": ray_head.dashboard_url, "password": ray_head.endpoint.token}),
    )
    sid = _submit(ray_head, "python -c 'print(1)'")
    trigger = RayJobTrigger(submission_id=sid, compute={"backend": "ray", "conn_id": "rayops_trigger_test"}, poll_interval=0.3)
    events, _ = _run_trigger(trigger)
    assert [e.payload["status"] for e in events] == ["SUCCEEDED"]
    assert ray_head.endpoint.token not in json.dumps(trigger.serialize()[1])


def _record_calls(monkeypatch, cls, name: str) -> list[float]:
    """The monotonic time of every call of the async method `cls.name` from here on."""
    calls: list[float] = []
    real = getattr(cls, name)

    async def recorded(self, *args, **kwargs):
        calls.append(time.monotonic())
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(cls, name, recorded)
    return calls


def test_the_log_streams_in_and_the_whole_log_is_never_fetched_again(ray_head, monkeypatch):
    """Before, every poll downloaded the driver's whole log; now the websocket tail moves only new
    text. A short log is read once whole at the job's end (faster than Ray's lagging stream); a
    log past WHOLE_LOG_READ_MAX_CHARS, made 0 here, is left to the stream."""
    from airflow_provider_rayops.hooks.ray_jobs_api import AsyncRayJobsClient
    from airflow_provider_rayops.triggers import ray_job

    whole_log_reads = _record_calls(monkeypatch, AsyncRayJobsClient, "get_logs")
    monkeypatch.setattr(ray_job, "WHOLE_LOG_READ_MAX_CHARS", 0)
    # long enough for Ray's tail to start streaming (it begins a few seconds into a job)
    code = (
        "import time\nfrom airflow_provider_rayops.jobs import report_result\n"
        'for i in range(12):\n    print(f"line {i}", flush=True); time.sleep(0.6)\n'
        'report_result({"lines": 12})\n'
    )
    sid = _submit(ray_head, f"python -c '{code}'")
    log = _Recorder("", lambda: None)
    outcome = asyncio.run(RayJobTrigger(submission_id=sid, compute=ray_head.compute, poll_interval=0.2).follow(log=log))
    assert outcome.status == "SUCCEEDED"
    assert outcome.result == {"lines": 12}
    assert [line for line in log.lines if line.startswith("line ")] == [f"line {i}" for i in range(12)]
    assert whole_log_reads == []


def test_a_job_that_goes_on_after_a_result_line_is_polled_at_its_pace_and_its_last_result_wins(ray_head, monkeypatch):
    """The status is polled fast for a while once a result line arrives (the job is about to end),
    then at the trigger's interval again, never in a loop; a later result line replaces the first."""
    from airflow_provider_rayops.hooks.ray_jobs_api import AsyncRayJobsClient
    from airflow_provider_rayops.triggers import ray_job

    polls = _record_calls(monkeypatch, AsyncRayJobsClient, "get_job")
    monkeypatch.setattr(ray_job, "RESULT_FAST_POLL_S", 0.5)
    code = (
        "import time\nfrom airflow_provider_rayops.jobs import report_result\n"
        'report_result({"which": "first"})\ntime.sleep(6)\nreport_result({"which": "last"})\n'
    )
    sid = _submit(ray_head, f"python -c '{code}'")
    outcome = asyncio.run(
        RayJobTrigger(submission_id=sid, compute=ray_head.compute, poll_interval=0.5).follow(log=_Recorder("", lambda: None))
    )
    assert outcome.status == "SUCCEEDED"
    assert outcome.result == {"which": "last"}
    # about 2 polls a second in all (5 fast ones once); a loop without a pause makes hundreds
    assert len(polls) < 4 * (polls[-1] - polls[0]) + 12


def test_a_deadline_stops_the_job_and_ends_as_timeout(ray_head):
    sid = _submit(ray_head, SLEEPS)
    _wait_log(ray_head, sid, "sleeping")
    trigger = RayJobTrigger(submission_id=sid, compute=ray_head.compute, poll_interval=0.3, deadline=time.time() + 2)
    events, _ = _run_trigger(trigger)
    payload = events[0].payload
    assert payload["status"] == "TIMEOUT"
    assert payload["message"] == "the task's execution_timeout ran out while the job still ran; the Ray job was stopped"
    assert payload["last_log_lines"][-1] == "sleeping"
    _wait_status(ray_head, sid, JobStatus.STOPPED, timeout=30)
    # the deadline survives the trip through the database
    assert RayJobTrigger(**trigger.serialize()[1]).deadline == trigger.deadline


def test_a_trigger_names_its_cluster_by_connection_like_the_operator():
    trigger = RayJobTrigger(submission_id="s-1", ray_conn_id="ray_prod")
    assert trigger.compute == {"backend": "ray", "conn_id": "ray_prod"}
    assert RayJobTrigger(**trigger.serialize()[1]).compute == trigger.compute
    assert RayJobTrigger(submission_id="s-1").compute == {"backend": "ray", "conn_id": "rayops_ray_default"}
    with pytest.raises(ValueError, match="not both"):
        RayJobTrigger(submission_id="s-1", ray_conn_id="ray_prod", compute={"backend": "local"})


def test_killing_a_deferred_task_whose_cluster_is_gone_does_not_raise(monkeypatch, capsys):
    """on_kill is best effort: the task ends either way; the log says the job may still run."""
    monkeypatch.setenv("AIRFLOW_CONN_RAY_GONE", json.dumps({"conn_type": "rayops_ray", "host": "http://127.0.0.1:9"}))
    trigger = RayJobTrigger(submission_id="s-gone", ray_conn_id="ray_gone")
    asyncio.run(trigger.on_kill())  # returns instead of raising
    logged = "".join(capsys.readouterr())
    assert "Could not stop Ray job s-gone" in logged and "cannot reach the Ray dashboard at http://127.0.0.1:9" in logged
