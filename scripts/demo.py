"""`make demo`: the example pipelines of dag_configs/ through real Airflow, on the embedded Ray head.

What it does, in order, printing each step:
  1. generates the seeded example data (data/churn.parquet) if it is not there; nothing is downloaded;
  2. validates every config with `rayops validate`;
  3. migrates a local Airflow database (SQLite, under .rayops/airflow);
  4. runs each pipeline DAG with `airflow dags test`: every stage is a Ray job on the embedded
     Ray head (started on 127.0.0.1 with a token-protected dashboard, state under .rayops/);
     a pipeline with `deploy:` puts its model behind a Ray Serve endpoint on that head, and the
     demo sends it a few real rows and prints the answers;
  5. closes the loop through Airflow's real services (api-server, scheduler, dag-processor,
     triggerer, started for this step): rows unlike the training data are sent to the endpoint;
     the pipeline's monitor DAG judges what the champion served, finds drift and writes its report
     (the demo prints its path); its asset event makes the scheduler start the pipeline, which
     retrains (the source is unchanged here, so the snapshot is reused), passes the gates and goes
     through a canary while a client sends requests (the demo prints which version answered); the
     new champion names the drift report as its trigger;
  6. stops the Airflow services and the embedded Ray head (pass --keep-ray to keep the head).
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
        for pipeline in pipelines:
            step(f"4. {pipeline}: first run (airflow dags test)")
            started = time.monotonic()
            proc = run(str(BIN / "airflow"), "dags", "test", pipeline, env=env, capture=True)
            for line in (proc.stdout + proc.stderr).splitlines():
                if "::rayops-result::" in line:
                    result, _ = json.JSONDecoder().raw_decode(line.split("::rayops-result::", 1)[1])
                    print(summarize(result))
                elif "DeployRayServeOperator" in line and (" serves {" in line or "%: {" in line or "breached" in line):
                    print("  deploy:   " + line.split("[info     ]", 1)[-1].split("[airflow.task", 1)[0].strip())
            print(f"{pipeline}: succeeded in {time.monotonic() - started:.1f} s")
            if endpoints[pipeline]:
                ask(endpoints[pipeline], rows)
        monitored = [p for p in pipelines if endpoints[p] and monitors(p, env)]
        if monitored:
            drift_loop(monitored, endpoints, rows, state=state)
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


def monitors(pipeline: str, env: dict[str, str]) -> bool:
    plan = json.loads(run(str(BIN / "rayops"), "render", pipeline, "--format", "json", env=env, capture=True).stdout)
    return bool(plan.get("monitor"))


def drift_loop(pipelines: list[str], endpoints: dict[str, str | None], rows: list[dict], *, state: Path) -> None:
    """Step 5: drifted rows in, the monitor's check, the scheduler's asset-triggered retraining."""
    sys.path.insert(0, str(ROOT))  # the services launcher the tests use too
    from airflow_provider_rayops.drift.check import count_rows, live_files
    from airflow_provider_rayops.jobs.datasets import make_churn
    from airflow_provider_rayops.serving.inference_log import log_uri
    from tests.fixtures.airflow_stack import start_airflow_stack

    step("5. drift: the Airflow services start (api-server, scheduler, dag-processor, triggerer on 127.0.0.1)")
    services = start_airflow_stack(
        state / "services",
        extra_env={"RAYOPS_HOME": str(state), "RAYOPS_CONFIG_DIR": str(ROOT / "dag_configs")},
        parallelism=2,
    )
    print(f"healthy after {services.startup_seconds:.1f} s; API {services.api_url}, logs under {services.home}")
    try:
        services.write_dag("rayops_pipelines.py", (ROOT / "dags" / "rayops_pipelines.py").read_text())
        for pipeline in pipelines:
            import requests

            url = endpoints[pipeline]
            assert url is not None
            services.wait_for_dag(f"{pipeline}__monitor", timeout=180)
            champion = requests.get(url + "/-/healthz", timeout=30).json()["champion"]
            shifted = make_churn(1000, seed=99, drift=1.0).drop(["churned"]).to_pylist()
            for start in range(0, len(shifted), 100):
                requests.post(url + "/", json={"dataframe_records": shifted[start : start + 100]}, timeout=60).raise_for_status()
            print(
                f"sent {len(shifted)} rows unlike the training data (tenure shorter, charges and support calls higher) to {url}/"
            )
            live = log_uri(f"file://{state / 'artifacts'}", pipeline)
            deadline = time.monotonic() + 60
            while count_rows(live_files(live, version=str(champion))) < len(shifted) and time.monotonic() < deadline:
                time.sleep(1)  # the replicas write their log every 10 s
            known = {r["dag_run_id"] for r in services.dag_runs(pipeline)}
            check = services.run_dag(f"{pipeline}__monitor", timeout=600)
            summary = services.xcom(check.dag_id, check.run_id, "check") if check.state == "success" else None
            print(f"{pipeline}__monitor: {check.state}; check {check.task_instances['check'].state}")
            if not summary:
                print(services.task_log(check.dag_id, check.run_id, "check")[-3000:])
                sys.exit("demo: the monitor found no drift to retrain for")
            print(
                f"  reasons: {summary['reasons']}; drifted columns: {summary['drifted_columns']} (share {summary['drift_share']:.2f})"
            )
            print(f"  prediction drift: {summary['prediction_drift']}")
            print(f"  drift report: {summary['report_html_uri']}")
            retrain_id = services.wait_for_new_run(pipeline, known=known, timeout=120)
            print(f"{pipeline}: the scheduler started run {retrain_id} on the drift event")
            traffic = Traffic(url, rows[:1])
            traffic.start()
            record = services.wait_for_run(pipeline, retrain_id, timeout=900)
            traffic.stop.set()
            print(f"{pipeline}: {record.state}: " + ", ".join(f"{t} {ti.state}" for t, ti in record.task_instances.items()))
            if record.state != "success":
                sys.exit("demo: the retraining run failed; see " + str(services.base_log_folder))
            deployed = services.xcom(pipeline, retrain_id, "deploy.serve")
            for canary in deployed.get("steps") or []:
                print(
                    f"  canary {canary['percent']}%: {canary['requests']} requests, {canary['errors']} errors, p99 {canary['p99_ms']} ms"
                )
            print(f"requests sent while it ran, by who answered: {dict(traffic.answers)}")
            ask(url, rows)
    finally:
        services.stop()


if __name__ == "__main__":
    sys.exit(main())
