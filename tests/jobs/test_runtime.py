"""The job-side contract: arguments in through RAYOPS_JOB_ARGS, one result marker line out."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from airflow_provider_rayops.jobs.runtime import (
    JOB_ARGS_ENV,
    RESULT_MARKER,
    JobInputError,
    NoSuchAttribute,
    import_object,
    job_args,
    parse_result,
    report_result,
)


def _run_python(code: str, *, env_args: dict | None = None) -> subprocess.CompletedProcess:
    import os

    env = {k: v for k, v in os.environ.items() if k != JOB_ARGS_ENV}
    if env_args is not None:
        env[JOB_ARGS_ENV] = json.dumps(env_args)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)


def test_job_args_are_empty_when_the_variable_is_unset(monkeypatch):
    monkeypatch.delenv(JOB_ARGS_ENV, raising=False)
    assert job_args() == {}


def test_job_args_read_the_json_object(monkeypatch):
    monkeypatch.setenv(JOB_ARGS_ENV, json.dumps({"source": "file:///d.parquet", "epochs": 3}))
    assert job_args() == {"source": "file:///d.parquet", "epochs": 3}


@pytest.mark.parametrize(("raw", "match"), [("{not json", "not valid JSON"), ("[1, 2]", "must be a JSON object")])
def test_malformed_job_args_are_a_user_error(monkeypatch, raw, match):
    monkeypatch.setenv(JOB_ARGS_ENV, raw)
    with pytest.raises(JobInputError, match=match):
        job_args()


def test_report_result_prints_one_marker_line(capsys):
    report_result({"uri": "file:///x", "rows": 3})
    out = capsys.readouterr().out
    assert out == RESULT_MARKER + '{"rows":3,"uri":"file:///x"}\n'


def test_report_result_refuses_what_is_not_a_dict():
    with pytest.raises(TypeError, match="list"):
        report_result(["not", "a", "dict"])  # type: ignore[arg-type]


def test_the_last_result_marker_wins_even_after_a_prefix():
    logs = "\n".join(
        [
            "starting",
            RESULT_MARKER + '{"n": 1}',
            "(train pid=42) " + RESULT_MARKER + '{"n": 2}',
            RESULT_MARKER + '{"n": 3',  # cut off: ignored
            "done",
        ]
    )
    assert parse_result(logs) == {"n": 2}


def test_logs_without_a_marker_have_no_result():
    assert parse_result("just\nlines\n") is None


def test_run_job_reports_what_main_returns():
    proc = _run_python(
        "from airflow_provider_rayops.jobs import run_job\nrun_job(lambda args: {'echo': args})",
        env_args={"a": 1},
    )
    assert proc.returncode == 0, proc.stderr
    assert parse_result(proc.stdout) == {"echo": {"a": 1}}


def test_run_job_turns_a_user_error_into_one_line_and_exit_code_1():
    proc = _run_python(
        "from airflow_provider_rayops.jobs import JobInputError, run_job\n"
        "def main(args):\n    raise JobInputError(\"job argument 'source' is required\")\n"
        "run_job(main)"
    )
    assert proc.returncode == 1
    assert proc.stderr == "rayops job input error: job argument 'source' is required\n"
    assert RESULT_MARKER not in proc.stdout


def test_run_job_keeps_the_traceback_of_a_bug():
    proc = _run_python(
        "from airflow_provider_rayops.jobs import run_job\ndef main(args):\n    return {}['missing']\nrun_job(main)"
    )
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "KeyError: 'missing'" in proc.stderr


def test_import_object_walks_dotted_attributes_and_tells_a_missing_one_from_a_failed_import(tmp_path, monkeypatch):
    (tmp_path / "rayops_probe_ok.py").write_text("class Outer:\n    class Inner:\n        pass\n")
    (tmp_path / "rayops_probe_broken.py").write_text("raise AttributeError('broken while importing')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_object("rayops_probe_ok:Outer.Inner").__qualname__ == "Outer.Inner"
    with pytest.raises(NoSuchAttribute, match="has no attribute 'Missing'"):
        import_object("rayops_probe_ok:Outer.Missing")
    with pytest.raises(AttributeError, match="broken while importing") as error:
        import_object("rayops_probe_broken:anything")
    assert not isinstance(error.value, NoSuchAttribute)
    with pytest.raises(ValueError, match="not of the form module:attribute"):
        import_object("rayops_probe_ok")


def test_job_side_modules_import_no_airflow():
    proc = _run_python(
        "import sys\n"
        "import airflow_provider_rayops.jobs.runtime, airflow_provider_rayops.backends.base, airflow_provider_rayops.hooks.ray_jobs_api\n"
        "import airflow_provider_rayops.triggers.job_outcome, airflow_provider_rayops.backends.local, airflow_provider_rayops.backends.embedded_head\n"
        "import airflow_provider_rayops.backends\n"
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
