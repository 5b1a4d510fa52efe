"""The rayops CLI, run as a user runs it (a subprocess of the installed console script)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RAYOPS = str(Path(sys.executable).parent / "rayops")


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run([RAYOPS, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_validate_passes_on_the_shipped_configs():
    proc = run("validate")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1 pipeline(s) valid, 0 file(s) with 0 error(s)"


def test_validate_prints_every_error_as_file_line_col_and_exits_1(tmp_path):
    folder = tmp_path / "dag_configs"
    folder.mkdir()
    shutil.copy(ROOT / "dag_configs" / "defaults.yaml", folder)
    bad = folder / "bad.yaml"
    bad.write_text("pipeline: churn\nschedul: '@daily'\ndata:\n  source: file://x.csv\n")
    good = folder / "good.yaml"
    good.write_text("pipeline: good\ndata: {source: file://x.csv, target: y}\n")
    proc = run("validate", str(bad), str(good), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [
        f"{bad}:2:1: schedul: unknown key 'schedul'; did you mean 'schedule'?",
        f"{bad}:3:1: data.target: required key missing (Name of the label column.)",
    ]
    assert proc.stdout.strip() == "1 pipeline(s) valid, 1 file(s) with 2 error(s)"


def test_validate_names_a_missing_path():
    proc = run("validate", "nope.yaml")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "nope.yaml:1:1: no such file or folder"


def test_list_shows_each_pipeline_with_schedule_compute_and_stages():
    proc = run("list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["PIPELINE", "SCHEDULE", "COMPUTE", "STAGES", "FILE"]
    assert lines[1].split() == ["churn", "@weekly", "local", "(local)", "ingest", "churn.yaml"]


def test_render_shows_the_exact_job_submissions():
    proc = run("render", "churn", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["dag_id"] == "churn"
    [task] = out["tasks"]
    assert task["task_id"] == "ingest.snapshot"
    assert task["submission"]["entrypoint"] == "python -m airflow_provider_rayops.jobs.ingest"
    args = task["submission"]["job_args"]
    assert args["source"] == f"file://{ROOT}/data/churn.parquet"
    assert args["split_validation"] == 0.2 and args["seed"] == 7
    assert args["snapshot_root"] == f"file://{ROOT}/.rayops/artifacts/snapshots/churn"


def test_render_of_an_unknown_pipeline_names_the_known_ones():
    proc = run("render", "nope")
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith("no pipeline 'nope' in dag_configs; known: churn")
