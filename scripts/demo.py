"""`make demo`: the example pipelines of dag_configs/ through Airflow's real services, on the embedded Ray head.

What it does, in order, printing each step:
  1. generates the seeded example data (data/churn.parquet) if it is not there; nothing is downloaded;
  2. validates every config with `rayops validate`; a pipeline on a kuberay profile (churn_gpu)
     needs a Kubernetes cluster this machine does not have: its RayJobs are printed instead
     (`rayops render --backend kuberay`), each checked against KubeRay v1.7's CRDs, and it is not run;
  3. starts Airflow's services on 127.0.0.1 (api-server, scheduler, dag-processor, triggerer; a
     fresh SQLite database under .rayops/services) with the project's DAG file; the pipelines
     arrive unpaused (`paused_upon_creation: false` in defaults.yaml);
  4. the scheduler starts each pipeline at once (its latest cron slot; a pipeline without a
     schedule is triggered): every stage is a Ray job on the embedded Ray head (started on
     127.0.0.1 with a token-protected dashboard, state under .rayops/); a pipeline with `deploy:`
     puts its model behind a Ray Serve endpoint on that head, and the demo sends it real rows;
  5. closes the loop: rows unlike the training data are sent to the endpoint; the pipeline's
     monitor (its DriftSensor, waiting since the DAGs arrived) judges what the champion served,
     finds drift and writes its report (the demo prints its path); its asset event makes the
     scheduler start the pipeline again, which retrains (the source is unchanged here, so the
     snapshot is reused), passes the gates and goes through a canary while a client sends
     requests (the demo prints which version answered); the new champion names the drift report
     as its trigger;
  6. stops the Airflow services and the embedded Ray head (pass --keep-ray to keep the head).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

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
                f"airflow_run={tags.get(names.RUN_ID)} deploy={tags.get(names.DEPLOY_OUTCOME)} "
                f"trigger={tags.get(names.TRIGGER)}"
                + (f" ({tags[names.TRIGGER_REPORT]})" if names.TRIGGER_REPORT in tags else "")
            )


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
    env.update(PATH=f"{BIN}:{env.get('PATH', '')}", RAYOPS_HOME=str(state), RAYOPS_CONFIG_DIR=str(ROOT / "dag_configs"))

    data = ROOT / "data" / "churn.parquet"
    step("1. example data")
    if data.exists():
        print(f"{data} exists; keeping it")
    else:
        run(
            str(BIN / "python"), "-m", "airflow_provider_rayops.jobs.datasets", "churn", "--rows", str(args.rows),
            "--seed", "7", "--out", f"file://{data}", env=env,
        )  # fmt: skip

    step("2. validate configs")
    run(str(BIN / "rayops"), "validate", env=env)
    listing = run(str(BIN / "rayops"), "list", env=env, capture=True).stdout
    print(listing)
    listed = [line.split()[0] for line in listing.splitlines()[1:] if line.strip()]
    plans = {
        p: json.loads(run(str(BIN / "rayops"), "render", p, "--format", "json", env=env, capture=True).stdout) for p in listed
    }
    sys.path.insert(0, str(ROOT))  # the services launcher and the CRD check the tests use too
    # Pipelines on a Kubernetes profile need a cluster this machine does not have: their RayJobs are shown instead.
    pipelines = [p for p in listed if plans[p]["compute"]["backend"] != "kuberay"]
    for pipeline in (p for p in listed if p not in pipelines):
        step(f"2b. {pipeline}: the RayJobs it would create on Kubernetes (compute {plans[pipeline]['compute']['profile']})")
        show_kuberay(pipeline, env)

    from tests.fixtures.airflow_stack import start_airflow_stack

    step("3. Airflow's services (api-server, scheduler, dag-processor, triggerer on 127.0.0.1)")
    shutil.rmtree(state / "services", ignore_errors=True)  # a fresh database each time
    services = start_airflow_stack(
        state / "services", extra_env={"RAYOPS_HOME": str(state), "RAYOPS_CONFIG_DIR": str(ROOT / "dag_configs")}
    )
    print(f"healthy after {services.startup_seconds:.1f} s; API {services.api_url}; logs under {services.home / 'logs'}")
    try:
        services.write_dag("rayops_pipelines.py", (ROOT / "dags" / "rayops_pipelines.py").read_text())
        rows = sample_rows(data, "churned", 3)
        for pipeline in pipelines:
            step(f"4. {pipeline}: the first run")
            first_run(services, pipeline, plans[pipeline])
            url = endpoint_of(plans[pipeline])
            if url:
                ask(url, rows)
        for pipeline in pipelines:
            url = endpoint_of(plans[pipeline])
            if url and plans[pipeline].get("monitor"):
                drift_loop(services, pipeline, url, rows)
        step("6. the model registry (MLflow, embedded store under .rayops/mlflow)")
        show_registry(state)
        snapshots = sorted((state / "artifacts" / "snapshots").glob("*/*/manifest.json"))
        step("7. snapshots written")
        for manifest in snapshots:
            body = json.loads(manifest.read_text())
            print(f"{manifest.parent}: rows={body.get('rows')} hash={str(body.get('content_hash'))[:12]}")
    finally:
        step("8. stop Airflow's services" + ("" if args.keep_ray else " and the embedded Ray head"))
        services.stop()
        if not args.keep_ray:
            subprocess.run([str(BIN / "rayops"), "head", "stop"], env=env, cwd=ROOT)
    return 0


def show_kuberay(pipeline: str, env: dict[str, str]) -> None:
    """`rayops render --backend kuberay`, a line per RayJob, each checked against KubeRay's CRDs
    when the shared copy of them is beside the project (tests/fixtures/kuberay_crds.py)."""
    import yaml

    rendered = run(str(BIN / "rayops"), "render", pipeline, "--backend", "kuberay", env=env, capture=True).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    try:
        from tests.fixtures import kuberay_crds

        kuberay_crds.crd("RayJob")
    except (ImportError, FileNotFoundError) as exc:
        kuberay_crds, why = None, str(exc)
    for doc in docs:
        spec = doc["spec"]
        groups = ", ".join(
            f"{g['groupName']} {g['minReplicas']}-{g['maxReplicas']} pods"
            + (f" x {g['template']['spec']['containers'][0]['resources']['limits'].get('nvidia.com/gpu', 0)} GPU")
            for g in spec.get("rayClusterSpec", {}).get("workerGroupSpecs", [])
        )
        checked = "valid for KubeRay v1.7's CRDs" if kuberay_crds is not None else "not checked"
        if kuberay_crds is not None:
            kuberay_crds.validate(doc)
        print(f"  RayJob {doc['metadata']['name']}: {spec['entrypoint']}; workers {groups or 'none'}; "
              f"deadline {spec.get('activeDeadlineSeconds')} s; {checked}")  # fmt: skip
    if kuberay_crds is None:
        print(f"  (the CRD check needs the shared KubeRay CRDs: {why})")
    print(f"  the whole manifests: rayops render {pipeline} --backend kuberay")


def endpoint_of(plan: dict) -> str | None:
    """The pipeline's Serve endpoint on this machine, from its plan (None without a deploy stage)."""
    deploy = next((t for t in plan["tasks"] if t["task_id"] == "deploy.serve"), None)
    if deploy is None:
        return None
    arguments = deploy["arguments"]
    return f"http://127.0.0.1:{arguments['http_port']}{arguments['route_prefix']}"


def first_run(services: Any, pipeline: str, plan: dict) -> None:
    """The run the scheduler starts when the DAG arrives (its latest cron slot), or one triggered
    here for a pipeline without a schedule; each stage's result printed."""
    services.wait_for_dag(pipeline, timeout=180)
    started = time.monotonic()
    if plan["schedule"]:
        run_id = services.wait_for_new_run(pipeline, timeout=120)
        print(f"the scheduler started {run_id} (schedule {plan['schedule']})")
    else:
        run_id = services.trigger(pipeline)
        print(f"no schedule: triggered {run_id}")
    record = services.wait_for_run(pipeline, run_id, timeout=1200)
    show_run(services, record)
    print(f"{pipeline}: {record.state} in {time.monotonic() - started:.1f} s")
    if record.state != "success":
        sys.exit(f"demo: {pipeline} failed; task logs under {services.base_log_folder}")


def show_run(services: Any, record: Any) -> None:
    """Each stage's result, in the words of its stage."""
    for task, ti in record.task_instances.items():
        if ti.state != "success":
            print(f"  {task}: {ti.state}")
            continue
        result = services.xcom(record.dag_id, record.run_id, task)
        if task == "deploy.serve" and isinstance(result, dict):
            steps = ", ".join(
                f"{s['percent']:g}%: {s['requests']} requests, {s['errors']} errors" for s in result.get("steps") or []
            )
            print(
                f"  deploy:   {result.get('outcome')}, weights {result.get('weights')}" + (f"; canary {steps}" if steps else "")
            )
        elif isinstance(result, dict) and task.split(".")[0] in ("ingest", "train", "tune", "evaluate"):
            print(summarize(result))


def drift_loop(services: Any, pipeline: str, url: str, rows: list[dict]) -> None:
    """Step 5: drifted rows in; the monitor's check; the scheduler's asset-triggered retraining."""
    import requests

    from airflow_provider_rayops.jobs.datasets import make_churn

    step(f"5. {pipeline}: drift closes the loop")
    known = {r["dag_run_id"] for r in services.dag_runs(pipeline)}
    seen = {r["dag_run_id"] for r in services.dag_runs(f"{pipeline}__monitor") if r["state"] in ("success", "failed")}
    shifted = make_churn(1000, seed=99, drift=1.0).drop(["churned"]).to_pylist()
    for start in range(0, len(shifted), 100):
        requests.post(url + "/", json={"dataframe_records": shifted[start : start + 100]}, timeout=60).raise_for_status()
    print(f"sent {len(shifted)} rows unlike the training data (tenure shorter, charges and support calls higher) to {url}/")
    print(f"{pipeline}__monitor: its check finds them in the inference log (it looks every poke_interval)")
    deadline = time.monotonic() + 900
    summary = None
    while summary is None:
        if time.monotonic() > deadline:
            sys.exit(f"demo: {pipeline}__monitor found no drift to retrain for; logs under {services.base_log_folder}")
        for run_info in services.dag_runs(f"{pipeline}__monitor"):
            if run_info["state"] not in ("success", "failed") or run_info["dag_run_id"] in seen:
                continue
            seen.add(run_info["dag_run_id"])
            found = (
                services.xcom(f"{pipeline}__monitor", run_info["dag_run_id"], "check") if run_info["state"] == "success" else None
            )
            print(f"{pipeline}__monitor {run_info['dag_run_id']}: {run_info['state']}" + ("" if found else " (no retraining)"))
            summary = summary or found
        time.sleep(3)
    print(
        f"  reasons {summary['reasons']}; drifted columns {summary['drifted_columns']} (share {summary['drift_share']:.2f}); "
        f"prediction drift {summary['prediction_drift']}"
    )
    print(f"  drift report: {summary['report_html_uri']}")
    retrain_id = services.wait_for_new_run(pipeline, known=known, timeout=120)
    print(f"{pipeline}: the scheduler started {retrain_id} on the drift event")
    traffic = Traffic(url, rows[:1])
    traffic.start()
    record = services.wait_for_run(pipeline, retrain_id, timeout=1200)
    traffic.stop.set()
    show_run(services, record)
    print(f"{pipeline}: {record.state}; requests sent while it ran, by who answered: {dict(traffic.answers)}")
    if record.state != "success":
        sys.exit(f"demo: the retraining run failed; task logs under {services.base_log_folder}")
    ask(url, rows)


if __name__ == "__main__":
    sys.exit(main())
