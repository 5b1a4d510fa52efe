"""The provider installs in a plain Airflow environment: no torch, no Ray.

A fresh venv gets the core distribution alone (no extras), built from this checkout the way
pip would build it for a user. In it, the example DAG folder parses, every operator, hook,
trigger and link module that `get_provider_info` declares imports, `rayops validate` runs,
a job's local folder is packed and uploaded to a real head (no Ray's client needed), the S3
connection's Test button names the extra it needs (pyarrow), and neither torch nor
any part of Ray is imported on the way. uv makes the venv (it shares a download cache
between runs, so this takes seconds after the first time).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Run inside the core-only venv; prints one JSON line.
PROBE = textwrap.dedent(
    """
    import importlib, json, os, sys
    from pathlib import Path

    from airflow.dag_processing.dagbag import DagBag

    from airflow_provider_rayops import get_provider_info

    root = Path(sys.argv[1])
    bag = DagBag(dag_folder=str(root / "dags"))
    info = get_provider_info()
    modules = sorted(
        {m for key in ("operators", "hooks", "triggers", "sensors") for item in info.get(key, []) for m in item["python-modules"]}
        | {path.rsplit(".", 1)[0] for path in info["extra-links"]}
        | {c["hook-class-name"].rsplit(".", 1)[0] for c in info["connection-types"]}
    )
    for name in modules:
        importlib.import_module(name)

    # A job whose code is a local folder: packed and uploaded without Ray, run on the session's head.
    import tempfile, time
    from airflow_provider_rayops.hooks.ray_jobs_api import RayEndpoint, RayJobsClient

    work = Path(tempfile.mkdtemp())
    (work / "main.py").write_text("print('shipped', 6 * 7)")
    client = RayJobsClient(RayEndpoint(os.environ["RAYOPS_TEST_DASHBOARD"], os.environ["RAYOPS_TEST_TOKEN"]))
    sid = "core-ship-%d" % time.time_ns()
    client.submit(submission_id=sid, entrypoint="python main.py", runtime_env={"working_dir": str(work)}, entrypoint_num_cpus=0)
    deadline = time.monotonic() + 120
    while not (info := client.get_job(sid)).status.is_terminal() and time.monotonic() < deadline:
        time.sleep(0.3)
    shipped = [info.status.value, "shipped 42" in client.get_logs(sid)]
    # The UI's Test button on a rayops_s3 connection: without pyarrow it names the extra to install.
    os.environ["AIRFLOW_CONN_RAYOPS_S3_PROBE"] = json.dumps({"conn_type": "rayops_s3", "host": "http://127.0.0.1:9"})
    from airflow_provider_rayops.hooks.s3 import S3StorageHook

    s3_test = S3StorageHook(s3_conn_id="rayops_s3_probe").test_connection()
    heavy = sorted({m.split(".")[0] for m in sys.modules if m.split(".")[0] in ("torch", "ray", "pyarrow", "numpy", "minio", "pandas")})
    print(json.dumps({"dags": sorted(bag.dag_ids), "import_errors": {k: v[-300:] for k, v in bag.import_errors.items()},
                      "modules": modules, "heavy": heavy, "shipped": shipped, "s3_test": s3_test}))
    """
)


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory) -> Path:
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    venv = tmp_path_factory.mktemp("core") / "venv"
    subprocess.run([uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True, timeout=120)
    # Airflow at the version CI runs (a user's constraints file does the same); nothing else pinned.
    constraints = venv.parent / "constraints.txt"
    constraints.write_text(f"apache-airflow=={metadata.version('apache-airflow')}\n")
    proc = subprocess.run(
        [uv, "pip", "install", "-q", "--python", str(venv / "bin" / "python"), "-c", str(constraints), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return venv


def _installed(venv: Path) -> set[str]:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import json, importlib.metadata as m; print(json.dumps([d.metadata['Name'] for d in m.distributions()]))"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return {name.lower().replace("_", "-") for name in json.loads(out)}


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RAYOPS"))}
    env.update(
        AIRFLOW_HOME=str(tmp_path / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        RAYOPS_HOME=str(tmp_path / "rayops"),
        RAYOPS_CONFIG_DIR=str(ROOT / "dag_configs"),
    )
    return env


def test_the_core_distribution_installs_without_torch_or_ray(core_venv):
    installed = _installed(core_venv)
    assert "airflow-provider-rayops" in installed and "apache-airflow-core" in installed
    assert not installed & {"torch", "ray", "pyarrow", "minio", "mlflow", "apache-airflow-providers-cncf-kubernetes"}
    assert "mlflow-skinny" in installed
    site = next((core_venv / "lib").glob("python3*/site-packages"))
    assert (site / "airflow_provider_rayops" / "py.typed").is_file()


def test_dags_parse_and_every_declared_module_imports_without_torch_or_ray(core_venv, tmp_path, ray_head):
    env = _env(tmp_path) | {"RAYOPS_TEST_DASHBOARD": ray_head.dashboard_url, "RAYOPS_TEST_TOKEN": ray_head.endpoint.token or ""}
    proc = subprocess.run(
        [str(core_venv / "bin" / "python"), "-c", PROBE, str(ROOT)], capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["import_errors"] == {}
    assert report["dags"] == ["churn", "churn__monitor", "churn__rollback", "churn_gpu"]
    assert "airflow_provider_rayops.operators.ray_job" in report["modules"]
    assert "airflow_provider_rayops.triggers.ray_job" in report["modules"]
    assert report["heavy"] == [], f"the Airflow side imported {report['heavy']}"
    assert report["shipped"] == ["SUCCEEDED", True]  # code shipped to a cluster without Ray on this side
    ok, message = report["s3_test"]
    assert ok is False
    assert "pip install 'airflow-provider-rayops[jobs]'" in message


def test_rayops_validate_runs_in_the_core_install(core_venv, tmp_path):
    proc = subprocess.run(
        [str(core_venv / "bin" / "rayops"), "--config-dir", str(ROOT / "dag_configs"), "validate"],
        capture_output=True, text=True, env=_env(tmp_path), timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 pipeline(s) valid" in proc.stdout
