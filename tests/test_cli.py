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
    assert lines[1].split() == ["churn", "@weekly", "local", "(local)", "ingest,train,evaluate,promote", "churn.yaml"]


def test_render_shows_the_exact_job_submissions():
    proc = run("render", "churn", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["dag_id"] == "churn"
    ingest, train, evaluate, register, champion = out["tasks"]
    assert [t["task_id"] for t in out["tasks"]] == [
        "ingest.snapshot",
        "train.fit",
        "evaluate.score",
        "promote.register",
        "promote.champion",
    ]
    assert register["operator"] == "RegisterMLflowModelOperator"
    assert register["arguments"]["evaluation"] == "<result of evaluate.score>"
    assert register["arguments"]["gates"][0] == {"metric": "auc", "min": 0.75}
    assert champion["arguments"]["version"] == "<result of promote.register>"
    assert train["upstream"] == ["ingest.snapshot"] and evaluate["upstream"] == ["train.fit"]
    assert train["submission"]["job_args"]["params"] == {"epochs": 4, "lr": 0.003, "batch_size": 256, "hidden_sizes": [64, 32]}
    assert train["submission"]["job_args"]["snapshot_uri"] == "<snapshot_uri from ingest.snapshot>"
    assert train["submission"]["job_args"]["run_root"] == f"file://{ROOT}/.rayops/artifacts/runs/churn/<run folder>"
    assert train["submission"]["job_args"]["lineage"]["run_id"] == "<run_id>"
    assert evaluate["submission"]["job_args"]["metrics"] == ["accuracy", "auc", "f1"]
    task = ingest
    assert task["submission"]["entrypoint"] == "python -m airflow_provider_rayops.jobs.ingest"
    args = task["submission"]["job_args"]
    assert args["source"] == f"file://{ROOT}/data/churn.parquet"
    assert args["split_validation"] == 0.2 and args["seed"] == 7
    assert args["snapshot_root"] == f"file://{ROOT}/.rayops/artifacts/snapshots/churn"


def test_render_of_an_unknown_pipeline_names_the_known_ones():
    proc = run("render", "nope")
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith("no pipeline 'nope' in dag_configs; known: churn")


def _project_with(tmp_path: Path, train: str) -> Path:
    folder = tmp_path / "dag_configs"
    folder.mkdir()
    shutil.copy(ROOT / "dag_configs" / "defaults.yaml", folder)
    path = folder / "p.yaml"
    path.write_text("pipeline: p\ndata: {source: file://x.csv, target: y}\ntrain:\n" + train)
    return path


def test_validate_imports_the_training_loop_and_names_the_import_error(tmp_path):
    (tmp_path / "myloops").mkdir()
    (tmp_path / "myloops" / "__init__.py").write_text("")
    (tmp_path / "myloops" / "train.py").write_text("import no_such_package\n")
    path = _project_with(tmp_path, "  entrypoint: myloops.train:train\n")
    proc = run("validate", str(path), cwd=tmp_path)
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"{path}:4:3: train.entrypoint: ")
    assert "No module named 'no_such_package'" in line
    assert run("validate", "--no-import-check", str(path), cwd=tmp_path).returncode == 0


def test_validate_checks_the_built_in_loops_params(tmp_path):
    path = _project_with(tmp_path, "  entrypoint: rayops.builtin:tabular_mlp\n  params: {epochs: 0}\n")
    proc = run("validate", str(path), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"{path}:5:12: train.params.epochs: params.epochs=0: expected an integer >= 1"]
