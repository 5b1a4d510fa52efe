"""The compute plane's vocabulary: statuses, job records, endpoints, errors, outcomes."""

from __future__ import annotations

import pickle

import pytest

from airflow_provider_rayops.hooks.ray_jobs_api import BackendNotAvailable, JobInfo, JobStatus, RayEndpoint, RayJobFailed, job_url
from airflow_provider_rayops.triggers.job_outcome import FAILURE_LOG_LINES, JobOutcome, LogFollower


def test_only_stopped_succeeded_and_failed_are_terminal():
    assert {s for s in JobStatus if s.is_terminal()} == {JobStatus.STOPPED, JobStatus.SUCCEEDED, JobStatus.FAILED}
    assert JobStatus("RUNNING") == "RUNNING"


def test_job_info_reads_the_jobs_api_json():
    info = JobInfo.from_api(
        {
            "submission_id": "s-1",
            "status": "FAILED",
            "entrypoint": "python x.py",
            "message": "boom",
            "driver_exit_code": 1,
            "metadata": {"k": "v"},
            "start_time": 1,
            "end_time": 2,
        }
    )
    assert info == JobInfo(
        submission_id="s-1",
        status=JobStatus.FAILED,
        entrypoint="python x.py",
        message="boom",
        start_time_ms=1,
        end_time_ms=2,
        driver_exit_code=1,
        metadata={"k": "v"},
    )


def test_an_endpoint_sends_the_token_as_bearer_but_never_shows_it():
    endpoint = RayEndpoint(dashboard_url="http://127.0.0.1:8265", token="s3cret")
    assert endpoint.headers() == {"Authorization": "Bearer s3cret"}
    assert "s3cret" not in repr(endpoint)
    assert RayEndpoint(dashboard_url="http://h:1").headers() == {}


def test_job_url_points_at_the_dashboard_job_page():
    assert job_url("http://127.0.0.1:8265/", "abc-1") == "http://127.0.0.1:8265/#/jobs/abc-1"


def test_ray_job_failed_says_what_happened_with_the_last_log_lines():
    err = RayJobFailed(
        submission_id="s-1",
        status="FAILED",
        message="Job entrypoint command failed with exit code 3, last available logs:\n...",
        last_log_lines=["step 1", "ValueError: bad"],
        dashboard_url="http://127.0.0.1:8265",
    )
    text = str(err)
    assert text.startswith("Ray job s-1 FAILED: Job entrypoint command failed with exit code 3")
    assert "http://127.0.0.1:8265/#/jobs/s-1" in text
    assert text.endswith("--- last 2 log lines ---\nstep 1\nValueError: bad")
    assert err.status is JobStatus.FAILED


def test_ray_job_failed_survives_pickling():
    err = RayJobFailed(submission_id="s-1", status="STOPPED", message="stopped", last_log_lines=["a"])
    back = pickle.loads(pickle.dumps(err))
    assert (back.submission_id, back.status, back.last_log_lines, str(back)) == ("s-1", JobStatus.STOPPED, ("a",), str(err))


def test_log_follower_hands_out_each_complete_line_once():
    follower = LogFollower()
    assert follower.catch_up("a\nb") == ["a"]
    assert follower.catch_up("a\nb\nc\n") == ["b", "c"]
    assert follower.catch_up("a\nb\nc\n") == []
    assert follower.catch_up("a\nb\nc\nlast") == [] and follower.finish() == ["last"]


def test_log_follower_keeps_only_the_last_lines_and_the_result_of_a_long_stream():
    follower = LogFollower()
    text = "".join(f"line {i}\n" for i in range(10_000)).replace("line 5000\n", '::rayops-result::{"auc": 0.9}\n')
    for start in range(0, len(text), 7):  # chunks that split lines anywhere
        follower.feed(text[start : start + 7])
    follower.feed("\n" + "x" * 5000)
    assert follower.finish() == ["x" * 5000]
    assert len(follower.last_lines) == FAILURE_LOG_LINES
    assert list(follower.last_lines)[-3:-1] == ["line 9998", "line 9999"]
    assert follower.last_lines[-1].endswith("[...]") and len(follower.last_lines[-1]) < 2100
    assert follower.result == {"auc": 0.9}


def test_log_follower_skips_what_it_saw_when_a_stream_starts_over():
    follower = LogFollower()
    assert follower.feed("one\ntw") == ["one"]
    follower.restart()
    assert follower.feed("one\n") == []
    assert follower.feed("two\nthree\n") == ["two", "three"]


def test_an_outcome_round_trips_through_a_trigger_event():
    outcome = JobOutcome(submission_id="s-1", status="FAILED", dashboard_url="http://d", message="m", last_log_lines=("x",))
    assert JobOutcome.from_event(outcome.to_event()) == outcome


def test_a_succeeded_outcome_gives_its_result_and_a_failed_one_raises():
    ok = JobOutcome(submission_id="s", status="SUCCEEDED", dashboard_url="http://d", result={"a": 1})
    assert ok.raise_for_status() == {"a": 1}
    assert JobOutcome(submission_id="s", status="SUCCEEDED", dashboard_url="http://d").raise_for_status() == {}
    with pytest.raises(RayJobFailed, match="Ray job s STOPPED"):
        JobOutcome(submission_id="s", status="STOPPED", dashboard_url="http://d").raise_for_status()
    with pytest.raises(BackendNotAvailable, match="lost track of Ray job s: head gone"):
        JobOutcome.error(submission_id="s", dashboard_url="http://d", message="head gone").raise_for_status()
