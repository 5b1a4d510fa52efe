"""`make demo`: the example pipelines of dag_configs/ through real Airflow, on the embedded Ray head.

What it does, in order, printing each step:
  1. generates the seeded example data (data/churn.parquet) if it is not there; nothing is downloaded;
  2. validates every config with `rayops validate`;
  3. migrates a local Airflow database (SQLite, under .rayops/airflow);
  4. runs each pipeline DAG with `airflow dags test`: every stage is a Ray job on the embedded
     Ray head (started on 127.0.0.1 with a token-protected dashboard, state under .rayops/);
     a pipeline with `deploy:` puts its model behind a Ray Serve endpoint on that head, and the
     demo sends it a few real rows and prints the answers;
  5. runs the pipeline again: an unchanged source reuses its snapshot, and the new model goes
     through a canary while a client sends requests (the demo prints which version answered);
  6. stops the embedded Ray head (pass --keep-ray to keep it for the next run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def step(title: str) -> None:
    print(f"\n=== {title}", flush=True)


def run(*cmd: str, env: dict[str, str], capture: bool = False) -> subprocess.CompletedProcess:
    print("$ " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, env=env, cwd=ROOT, text=True, capture_output=capture)
    if proc.returncode != 0:
        if capture:
            print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n")
        sys.exit(f"demo: `{' '.join(cmd)}` failed with exit code {proc.returncode}")
    return proc


def summarize(result: dict) -> str:
    """One line per job result, in the words of its stage."""
    if "snapshot_uri" in result and "content_hash" in result:
        return f"  ingest:   snapshot {result['content_hash'][:12]} rows={result['rows']} reused={result['reused']}"
    if "epochs_completed" in result:
        m = result.get("metrics", {})
        return (
            f"  train:    MLflow run {result['mlflow_run_id'][:8]} epochs={result['epochs_completed']} "
            f"val_auc={m.get('val_auc', float('nan')):.3f} val_loss={m.get('val_loss', float('nan')):.3f}"
        )
    if "per_class" in result:
        m = result["metrics"]
        champion = result.get("champion")
        versus = f"champion v{champion['version']} auc={champion['metrics'].get('auc')}" if champion else "no champion yet"
        return (
            "  evaluate: "
            + " ".join(f"{k}={v:.3f}" for k, v in m.items() if v is not None)
            + f" p95={result['latency']['p95_ms']:.2f}ms size={result['model_size_mb']:.3f}MB; {versus}"
        )
    return "  result:   " + json.dumps(result)[:200]


def show_registry(state: Path) -> None:
    from mlflow import MlflowClient

    from airflow_provider_rayops import tag_names as names

    client = MlflowClient(tracking_uri=f"sqlite:///{state / 'mlflow' / 'mlflow.db'}")
    for model in client.search_registered_models():
        print(f"registered model {model.name}: aliases {dict(sorted(model.aliases.items()))}")
        for version in sorted(client.search_model_versions(f"name='{model.name}'"), key=lambda v: int(v.version)):
            tags = version.tags
            print(
                f"  v{version.version}: gates_passed={tags.get(names.GATES_PASSED)} "
                f"approval={tags.get(names.APPROVAL)} snapshot={tags.get(names.SNAPSHOT_HASH, '')[:12]} "
                f"airflow_run={tags.get(names.RUN_ID)} deploy={tags.get(names.DEPLOY_OUTCOME)}"
            )


def endpoint_of(pipeline: str, env: dict[str, str]) -> str | None:
    """The pipeline's Serve endpoint on this machine, from its plan (None without a deploy stage)."""
    plan = json.loads(run(str(BIN / "rayops"), "render", pipeline, "--format", "json", env=env, capture=True).stdout)
    deploy = next((t for t in plan["tasks"] if t["task_id"] == "deploy.serve"), None)
    if deploy is None:
        return None
    arguments = deploy["arguments"]
    return f"http://127.0.0.1:{arguments['http_port']}{arguments['route_prefix']}"


def sample_rows(data: Path, target: str, n: int) -> list[dict]:
    import pyarrow.parquet as pq

    return pq.read_table(data).slice(0, n).drop([target]).to_pylist()


def ask(url: str, rows: list[dict]) -> None:
    import requests

    answer = requests.post(url + "/", json={"dataframe_records": rows}, timeout=30)
    print(f"POST {url}/ with {len(rows)} rows -> HTTP {answer.status_code}")
    body = answer.json()
    for row, prediction in zip(rows, body.get("predictions", []), strict=False):
        shown = {k: row[k] for k in list(row)[:3]}
        print(f"  {shown} ... -> {prediction} (v{body.get('version')})")
    health = requests.get(url + "/-/healthz", timeout=30).json()
    print(f"GET {url}/-/healthz -> {health}")


class Traffic(threading.Thread):
    """Requests to the endpoint while a deploy runs: which version answered, and any failure."""

    def __init__(self, url: str, rows: list[dict]) -> None:
        super().__init__(daemon=True)
        self.url, self.rows = url, rows
        self.answers: Counter = Counter()
        self.stop = threading.Event()

    def run(self) -> None:
        import requests

        session = requests.Session()
        while not self.stop.is_set():
            try:
                r = session.post(self.url + "/", json={"dataframe_records": self.rows}, timeout=30)
                self.answers[f"v{r.json().get('version')}" if r.status_code == 200 else f"HTTP {r.status_code}"] += 1
            except requests.RequestException:
                self.answers["no answer"] += 1  # no endpoint yet, or a failure
            time.sleep(0.05)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--keep-ray", action="store_true", help="leave the embedded Ray head running")
    parser.add_argument("--rows", type=int, default=20_000, help="rows of generated churn data")
    args = parser.parse_args()

    state = ROOT / ".rayops"
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN}:{env.get('PATH', '')}",
        RAYOPS_HOME=str(state),
        RAYOPS_CONFIG_DIR=str(ROOT / "dag_configs"),
        AIRFLOW_HOME=str(state / "airflow"),
        AIRFLOW__CORE__DAGS_FOLDER=str(ROOT / "dags"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        PYTHONUNBUFFERED="1",
    )

    data = ROOT / "data" / "churn.parquet"
    step("1. example data")
    if data.exists():
        print(f"{data} exists; keeping it")
    else:
        run(
            str(BIN / "python"),
            "-m",
            "airflow_provider_rayops.jobs.datasets",
            "churn",
            "--rows",
            str(args.rows),
            "--seed",
            "7",
            "--out",
            f"file://{data}",
            env=env,
        )

    step("2. validate configs")
    run(str(BIN / "rayops"), "validate", env=env)
    listing = run(str(BIN / "rayops"), "list", env=env, capture=True).stdout
    print(listing)
    pipelines = [line.split()[0] for line in listing.splitlines()[1:] if line.strip()]

    step("3. Airflow database")
    run(str(BIN / "airflow"), "db", "migrate", env=env, capture=True)
    print(f"migrated {state / 'airflow' / 'airflow.db'}")

    endpoints = {pipeline: endpoint_of(pipeline, env) for pipeline in pipelines}
    rows = sample_rows(data, "churned", 3)
    try:
        for number, attempt in enumerate(("first run", "second run: unchanged source, snapshot reused, a canary")):
            for pipeline in pipelines:
                step(f"{4 + number}. {pipeline}: {attempt}")
                url = endpoints[pipeline]
                traffic = Traffic(url, rows[:1]) if url and number else None
                if traffic:
                    traffic.start()
                started = time.monotonic()
                proc = run(str(BIN / "airflow"), "dags", "test", pipeline, env=env, capture=True)
                if traffic:
                    traffic.stop.set()
                for line in (proc.stdout + proc.stderr).splitlines():
                    if "::rayops-result::" in line:
                        result, _ = json.JSONDecoder().raw_decode(line.split("::rayops-result::", 1)[1])
                        print(summarize(result))
                    elif "DeployRayServeOperator" in line and (" serves {" in line or "%: {" in line or "breached" in line):
                        print("  deploy:   " + line.split("[info     ]", 1)[-1].split("[airflow.task", 1)[0].strip())
                print(f"{pipeline}: succeeded in {time.monotonic() - started:.1f} s")
                if traffic:
                    print(f"requests sent while it ran, by who answered: {dict(traffic.answers)}")
                if url:
                    ask(url, rows)
        step("6. the model registry (MLflow, embedded store under .rayops/mlflow)")
        show_registry(state)
        snapshots = sorted((state / "artifacts" / "snapshots").glob("*/*/manifest.json"))
        step("7. snapshots written")
        for manifest in snapshots:
            body = json.loads(manifest.read_text())
            print(f"{manifest.parent}: rows={body.get('rows')} hash={str(body.get('content_hash'))[:12]}")
    finally:
        if not args.keep_ray:
            step("8. stop the embedded Ray head")
            subprocess.run([str(BIN / "rayops"), "head", "stop"], env=env, cwd=ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
