"""Code shipping: a cluster sent rayops' job code with every job, beside one whose image has it.

    .venv/bin/python benchmarks/code_shipping.py                      # 2 rounds, 20k rows, 3 epochs
    .venv/bin/python benchmarks/code_shipping.py --rounds 3 --write benchmarks/SHIPPING_RESULTS.md

Two Ray heads on 127.0.0.1 run side by side in one run, each an existing cluster reached through
a rayops_ray connection:

- image: run by this venv's Python, which has airflow-provider-rayops (profile `code: image`:
  the probe checks it, nothing is uploaded);
- ship: run by a venv that has Ray, torch, pyarrow and MLflow but neither rayops nor Airflow
  (tests/fixtures/bare_cluster.py; profile `code: ship`: every job is sent the job code).

The same pipeline (seeded churn data, the built-in loop, file storage in a temporary project, a
local `mlflow server`) runs on each with `airflow dags test`, alternating which goes first. What
is timed is what the user waits for: each stage's task from start to end as Airflow recorded it
(probe, packing, upload, submission, the job, the wait), and the whole `airflow dags test`
command. Round 1 is the cold one: the first probe of each cluster and the first upload.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from versions import installed  # noqa: E402  (benchmarks/versions.py, beside this script)

BIN = Path(sys.executable).parent
STAGES = ("ingest.snapshot", "train.fit", "evaluate.score", "promote.register", "promote.champion")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mlflow_server(folder: Path) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    cmd = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}", "--artifacts-destination", f"file://{folder / 'artifacts'}"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                return proc, uri
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("mlflow server did not start within 120 s")


def _project(folder: Path, rows: int, epochs: int) -> Path:
    from airflow_provider_rayops.jobs.datasets import make_churn, table_bytes

    configs = folder / "dag_configs"
    configs.mkdir(parents=True)
    (folder / "data").mkdir()
    (folder / "data" / "churn.parquet").write_bytes(table_bytes(make_churn(rows, seed=7), fmt="parquet"))
    (configs / "defaults.yaml").write_text((ROOT / "dag_configs" / "defaults.yaml").read_text())
    for variant in ("image", "ship"):
        (configs / f"{variant}.yaml").write_text(
            textwrap.dedent(
                f"""
                pipeline: bench_{variant}
                compute: {variant}
                compute_profiles:
                  {variant}: {{backend: ray, conn_id: bench_{variant}, code: {variant}}}
                tracking: {{conn_id: bench_mlflow}}
                data: {{source: file://data/churn.parquet, target: churned}}
                train:
                  entrypoint: rayops.builtin:tabular_mlp
                  params: {{epochs: {epochs}, lr: 0.01, batch_size: 256}}
                evaluate:
                  metrics: [auc]
                  gates: [{{metric: auc, min: 0.5}}]
                promote: {{registered_model: bench_{variant}}}
                """
            )
        )
    return dags_folder(folder, configs)


def dags_folder(folder: Path, configs: Path) -> Path:
    """A DAG folder under `folder` whose one file loads the pipelines of `configs` (shared by the benchmarks)."""
    dags = folder / "dags"
    dags.mkdir()
    (dags / "pipelines.py").write_text(
        f"from airflow_provider_rayops.factory import load_pipelines\nload_pipelines(globals(), config_dir={str(configs)!r})\n"
    )
    return dags


def task_seconds(db: Path, dag_id: str, *, skipped_ok: bool = False) -> dict[str, float]:
    """Seconds per task of the DAG's latest run, as Airflow recorded them; a task that did not
    succeed raises, except a skipped one when `skipped_ok` (left out then)."""
    with sqlite3.connect(db) as conn:
        (run_id,) = conn.execute("select run_id from dag_run where dag_id = ? order by id desc limit 1", (dag_id,)).fetchone()
        rows = conn.execute(
            "select task_id, start_date, end_date, state from task_instance where dag_id = ? and run_id = ?", (dag_id, run_id)
        ).fetchall()
    out = {}
    for task_id, start, end, state in rows:
        if state == "skipped" and skipped_ok:
            continue
        if state != "success":
            raise RuntimeError(f"{dag_id} {task_id} ended {state}")
        out[task_id] = (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    return out


def results_table(results: dict[str, list[dict[str, float]]], args: argparse.Namespace, load: list[float], shipped: str) -> str:
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{', '.join(f'{d} {installed(d)}' for d in ('ray', 'apache-airflow', 'torch'))}; load average {load[0]:.1f} at start, {load[-1]:.1f} at end.",
        f"Pipeline: churn, {args.rows} rows, built-in loop, {args.epochs} epochs, file storage, MLflow server; "
        f"{args.rounds} rounds, alternating order. Shipped job code: {shipped}.",
        "",
        "| stage (seconds, as Airflow recorded the task) | image, round 1 | ship, round 1 | image, later rounds (median) | ship, later rounds (median) | ship / image (later) |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for stage in (*STAGES, "airflow dags test"):
        first = [results[v][0][stage] for v in ("image", "ship")]
        later = [
            statistics.median(r[stage] for r in results[v][1:]) if len(results[v]) > 1 else float("nan")
            for v in ("image", "ship")
        ]
        lines.append(
            f"| {stage} | {first[0]:.1f} | {first[1]:.1f} | {later[0]:.1f} | {later[1]:.1f} | {later[1] / later[0]:.2f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--write", type=Path, help="also write the results table (markdown) here")
    args = parser.parse_args()

    from airflow_provider_rayops.backends import cluster_code
    from airflow_provider_rayops.backends.embedded_head import EmbeddedHead
    from tests.fixtures.bare_cluster import make_bare_venv

    work = Path(tempfile.mkdtemp(prefix="rayops-bench-ship-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RAYOPS"))}
    env.update(
        AIRFLOW_HOME=str(work / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        RAYOPS_HOME=str(work / "rayops"),
        PYTHONUNBUFFERED="1",
    )
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(_project(work / "project", args.rows, args.epochs))
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, check=True, timeout=600)
    mlflow, tracking_uri = _mlflow_server(work / "mlflow")
    env["AIRFLOW_CONN_BENCH_MLFLOW"] = json.dumps({"conn_type": "rayops_mlflow", "host": tracking_uri})
    heads = {
        "image": EmbeddedHead(work / "head-image", num_cpus=2),
        "ship": EmbeddedHead(work / "head-ship", num_cpus=2, python=str(make_bare_venv(work / "bare-venv"))),
    }
    saved_pythonpath = os.environ.pop("PYTHONPATH", None)  # the heads inherit it; the bare one must not see ours
    results: dict[str, list[dict[str, float]]] = {"image": [], "ship": []}
    load = [os.getloadavg()[0]]
    try:
        for variant, head in heads.items():
            endpoint = head.endpoint()
            env[f"AIRFLOW_CONN_BENCH_{variant.upper()}"] = json.dumps(
                {"conn_type": "rayops_ray", "host": endpoint.dashboard_url, "password": endpoint.token}
            )
        for round_no in range(args.rounds):
            order = ("ship", "image") if round_no % 2 == 0 else ("image", "ship")
            for variant in order:
                started = time.monotonic()
                proc = subprocess.run(
                    [str(BIN / "airflow"), "dags", "test", f"bench_{variant}"],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=1800,
                )
                wall = time.monotonic() - started
                if proc.returncode != 0:
                    print(proc.stdout[-3000:], proc.stderr[-3000:])
                    raise RuntimeError(f"bench_{variant} failed in round {round_no + 1}")
                stages = task_seconds(work / "airflow" / "airflow.db", f"bench_{variant}")
                results[variant].append({**stages, "airflow dags test": wall})
                print(f"round {round_no + 1} {variant}: " + ", ".join(f"{k} {v:.1f}s" for k, v in results[variant][-1].items()))
        load.append(os.getloadavg()[0])
    finally:
        for head in heads.values():
            head.stop()
        mlflow.kill()
        if saved_pythonpath is not None:
            os.environ["PYTHONPATH"] = saved_pythonpath

    table = results_table(results, args, load, cluster_code.rayops_package().describe())
    print("\n" + table)
    if args.write:
        args.write.write_text(f"# Code shipping: `code: ship` beside `code: image`\n\n`{' '.join(sys.argv)}`\n\n{table}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
