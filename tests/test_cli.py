"""The rayops CLI: `cli.main()` in this process, as the console script calls it, with the
working folder and environment a user would have; one test runs the installed console script
itself (a fresh process, as a user runs it)."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from airflow_provider_rayops import cli
from tests.fixtures import kuberay_crds
from tests.fixtures.kube_api import _kuberay_validation

ROOT = Path(__file__).resolve().parents[1]
RAYOPS = str(Path(sys.executable).parent / "rayops")


@dataclasses.dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def run(monkeypatch, capsys):
    """`rayops <args>` in folder `cwd`; RAYOPS_CONFIG_DIR unset unless given in `env`."""

    def rayops(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> Result:
        monkeypatch.chdir(cwd)
        monkeypatch.delenv("RAYOPS_CONFIG_DIR", raising=False)
        for name, value in (env or {}).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        code = cli.main(list(args))
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return rayops


def run_console_script(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run([RAYOPS, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def test_validate_passes_on_the_shipped_configs(run):
    proc = run("validate")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "2 pipeline(s) valid, 0 file(s) with 0 error(s)"


def test_validate_prints_every_error_as_file_line_col_and_exits_1(run, tmp_path):
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


def test_validate_names_a_missing_path(run):
    proc = run("validate", "nope.yaml")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "nope.yaml:1:1: no such file or folder"


def test_list_shows_each_pipeline_with_schedule_compute_and_stages(run):
    proc = run("list")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["PIPELINE", "SCHEDULE", "COMPUTE", "STAGES", "FILE"]
    assert lines[1].split() == [
        "churn",
        "@weekly,drift",
        "local",
        "(local)",
        "ingest,train,evaluate,promote,deploy,monitor",
        "churn.yaml",
    ]


def test_render_shows_the_exact_job_submissions(run):
    proc = run("render", "churn", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["dag_id"] == "churn"
    ingest, train, evaluate, register, deploy, champion = out["tasks"]
    assert [t["task_id"] for t in out["tasks"]] == [
        "ingest.snapshot",
        "train.fit",
        "evaluate.score",
        "promote.register",
        "deploy.serve",
        "promote.champion",
    ]
    assert deploy["operator"] == "DeployRayServeOperator" and deploy["upstream"] == ["promote.register"]
    assert deploy["arguments"]["canary"]["steps"] == [50, 100] and deploy["arguments"]["route_prefix"] == "/churn"
    assert champion["upstream"] == ["deploy.serve"]
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


def test_render_for_kuberay_prints_the_rayjobs_kubernetes_would_accept(run):
    proc = run("render", "churn_gpu", "--backend", "kuberay")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("# churn_gpu on compute profile 'kuberay-gpu' (kuberay)")
    docs = list(yaml.safe_load_all(proc.stdout))
    assert [d["spec"]["entrypoint"] for d in docs] == [
        "python -m airflow_provider_rayops.jobs.ingest",
        "python -m airflow_provider_rayops.jobs.train",
        "python -m airflow_provider_rayops.jobs.evaluate",
    ]
    for doc in docs:
        kuberay_crds.validate(doc)
        assert _kuberay_validation(doc) is None
    train = docs[1]
    args = json.loads(yaml.safe_load(train["spec"]["runtimeEnvYAML"])["env_vars"]["RAYOPS_JOB_ARGS"])
    assert args["scaling"] == {"num_workers": 2, "use_gpu": True, "resources_per_worker": {}}
    (gpu,) = train["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert train["spec"]["activeDeadlineSeconds"] == 86400  # the train stage's timeout (a day by default)


def test_render_for_kuberay_of_a_local_pipeline_uses_a_kuberay_profile_or_names_them(run):
    proc = run("render", "churn", "--backend", "kuberay")
    assert proc.returncode == 0, proc.stderr
    assert "on compute profile 'kuberay-gpu' (kuberay)" in proc.stdout
    proc = run("render", "churn", "--backend", "kuberay", "--compute", "dev-cluster")
    assert proc.returncode == 1
    assert (
        proc.stderr.strip() == "rayops render: no kuberay compute profile 'dev-cluster' for churn (kuberay profiles: kuberay-gpu)"
    )


def test_render_of_an_unknown_pipeline_names_the_known_ones(run):
    proc = run("render", "nope")
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith("no pipeline 'nope' in dag_configs; known: churn, churn_gpu")


def _project_with(tmp_path: Path, train: str) -> Path:
    folder = tmp_path / "dag_configs"
    folder.mkdir()
    shutil.copy(ROOT / "dag_configs" / "defaults.yaml", folder)
    path = folder / "p.yaml"
    path.write_text("pipeline: p\ndata: {source: file://x.csv, target: y}\ntrain:\n" + train)
    return path


def test_validate_imports_the_training_loop_and_names_the_import_error(tmp_path):
    """The console script, in a fresh process (the user's loop is imported; nothing leaks into this one)."""
    (tmp_path / "myloops").mkdir()
    (tmp_path / "myloops" / "__init__.py").write_text("")
    (tmp_path / "myloops" / "train.py").write_text("import no_such_package\n")
    path = _project_with(tmp_path, "  entrypoint: myloops.train:train\n")
    proc = run_console_script("validate", str(path), cwd=tmp_path)
    assert proc.returncode == 1
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"{path}:4:3: train.entrypoint: ")
    assert "No module named 'no_such_package'" in line
    assert run_console_script("validate", "--no-import-check", str(path), cwd=tmp_path).returncode == 0


def test_validate_checks_the_built_in_loops_params(run, tmp_path):
    path = _project_with(tmp_path, "  entrypoint: rayops.builtin:tabular_mlp\n  params: {epochs: 0}\n")
    proc = run("validate", str(path), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"{path}:5:12: train.params.epochs: params.epochs=0: expected an integer >= 1"]


def _two_pipelines(folder: Path, *, broken: bool = False) -> Path:
    folder.mkdir(parents=True)
    shutil.copy(ROOT / "dag_configs" / "defaults.yaml", folder)
    (folder / "fraud.yaml").write_text("pipeline: fraud\nschedule: '@daily'\ndata: {source: file://f.csv, target: y}\n")
    if broken:
        (folder / "broken.yaml").write_text("pipeline: broken\ndata: [\n")
    return folder


def test_list_shows_the_good_pipelines_and_counts_the_broken_files(run, tmp_path):
    folder = _two_pipelines(tmp_path / "configs", broken=True)
    proc = run("--config-dir", str(folder), "list", cwd=tmp_path)
    assert proc.returncode == 1  # the listing is shown, and the exit status says something is broken
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert [row[0] for row in rows] == ["PIPELINE", "fraud", "(invalid)"]
    assert rows[2][-1] == "broken.yaml"
    assert proc.stderr.strip() == "1 invalid file(s): run `rayops validate` for the errors"


def test_the_config_folder_comes_from_the_flag_then_the_environment_then_dag_configs(run, tmp_path):
    flag = _two_pipelines(tmp_path / "from-flag")
    env_dir = tmp_path / "from-env"
    env_dir.mkdir()
    shutil.copy(ROOT / "dag_configs" / "defaults.yaml", env_dir)
    (env_dir / "env.yaml").write_text("pipeline: from_env\ndata: {source: file://e.csv, target: y}\n")
    _two_pipelines(tmp_path / "dag_configs")  # ./dag_configs of the working folder

    def listed(*args: str, env: dict[str, str] | None = None) -> list[str]:
        proc = run(*args, "list", cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr
        return [line.split()[0] for line in proc.stdout.splitlines()[1:]]

    assert listed() == ["fraud"]
    assert listed(env={"RAYOPS_CONFIG_DIR": str(env_dir)}) == ["from_env"]
    assert listed("--config-dir", str(flag), env={"RAYOPS_CONFIG_DIR": str(env_dir)}) == ["fraud"]


def test_render_as_text_shows_each_task_and_its_job(run):
    proc = run("render", "churn")
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for task in ("ingest.snapshot", "train.fit", "evaluate.score", "promote.register", "promote.champion"):
        assert task in text
    assert 'job: "ingest (IngestArgs -> IngestResult)"' in text
    assert "python -m airflow_provider_rayops.jobs.train" in text


def test_schema_prints_the_pipeline_json_schema(run):
    from airflow_provider_rayops.config.schema import PipelineSpec

    proc = run("schema")
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    assert schema == json.loads(json.dumps(PipelineSpec.model_json_schema()))
    assert {"pipeline", "data"} <= set(schema["required"])
    assert "train" in schema["properties"] and "promote" in schema["properties"]


def test_a_missing_config_folder_is_named_with_where_it_came_from(run, tmp_path):
    proc = run("list", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        f"{tmp_path}/dag_configs: no such folder (from the default ./dag_configs); give --config-dir or set RAYOPS_CONFIG_DIR"
    )
    proc = run("validate", cwd=tmp_path, env={"RAYOPS_CONFIG_DIR": str(tmp_path / "gone")})
    assert proc.returncode == 1 and "gone: no such folder (from RAYOPS_CONFIG_DIR)" in proc.stderr


def _drift_files(folder: Path, *, shift: float) -> tuple[str, str]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    ref = pa.table({"a": rng.normal(0, 1, 2000), "b": rng.normal(0, 1, 2000), "plan": rng.choice(["x", "y"], 2000)})
    cur = pa.table({"a": rng.normal(shift, 1, 1500), "b": rng.normal(shift, 1, 1500), "plan": rng.choice(["x", "y"], 1500)})
    pq.write_table(ref, folder / "ref.parquet")
    pq.write_table(cur, folder / "cur.parquet")
    return str(folder / "ref.parquet"), str(folder / "cur.parquet")


def test_drift_prints_the_column_table_and_exits_0_without_drift(run, tmp_path):
    ref, cur = _drift_files(tmp_path, shift=0.0)
    result = run("drift", ref, cur)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[2].split() == ["column", "kind", "method", "statistic", "threshold", "drifted"]
    assert [line.split()[0] for line in lines[3:6]] == ["a", "b", "plan"]
    assert lines[-1] == "no dataset drift: 0 of 3 columns drifted (0%; drift at 50% or more)"


def test_drift_as_json_exits_1_with_drift(run, tmp_path):
    ref, cur = _drift_files(tmp_path, shift=1.0)
    report = tmp_path / "drift.html"
    result = run("drift", ref, cur, "--json", "--column", "plan=chisquare:0.01", "--report", str(report))
    assert result.returncode == 1, result.stderr
    assert "Dataset drift. 2 of 3 columns drifted" in report.read_text()
    out = json.loads(result.stdout)
    assert out["dataset_drift"] is True and out["drift_share"] == pytest.approx(2 / 3)
    assert set(out["columns"]) == {"a", "b", "plan"}
    assert {key: out["columns"]["plan"][key] for key in ("method", "threshold", "drifted")} == {
        "method": "chisquare",
        "threshold": 0.01,
        "drifted": False,
    }
    assert set(out["columns"]["a"]) >= {"method", "statistic", "threshold", "drifted"}


def test_drift_exits_2_naming_a_missing_file_or_a_bad_column(run, tmp_path):
    ref, cur = _drift_files(tmp_path, shift=0.0)
    missing = run("drift", ref, str(tmp_path / "none.parquet"))
    assert missing.returncode == 2 and "none.parquet: does not exist" in missing.stderr
    unknown = run("drift", ref, cur, "--include", "a,zz")
    assert unknown.returncode == 2
    assert "column 'zz': not in the reference" in unknown.stderr
