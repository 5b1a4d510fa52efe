"""`make demo`: the example pipelines of dag_configs/ through real Airflow, on the embedded Ray head.

What it does, in order, printing each step:
  1. generates the seeded example data (data/churn.parquet) if it is not there; nothing is downloaded;
  2. validates every config with `rayops validate`;
  3. migrates a local Airflow database (SQLite, under .rayops/airflow);
  4. runs each pipeline DAG with `airflow dags test`: every stage is a Ray job on the embedded
     Ray head (started on 127.0.0.1 with a token-protected dashboard, state under .rayops/);
  5. runs the pipeline again to show that an unchanged source reuses its snapshot;
  6. stops the embedded Ray head (pass --keep-ray to keep it for the next run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
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
        run(str(BIN / "python"), "-m", "airflow_provider_rayops.jobs.datasets", "churn",
            "--rows", str(args.rows), "--seed", "7", "--out", f"file://{data}", env=env)

    step("2. validate configs")
    run(str(BIN / "rayops"), "validate", env=env)
    listing = run(str(BIN / "rayops"), "list", env=env, capture=True).stdout
    print(listing)
    pipelines = [line.split()[0] for line in listing.splitlines()[1:] if line.strip()]

    step("3. Airflow database")
    run(str(BIN / "airflow"), "db", "migrate", env=env, capture=True)
    print(f"migrated {state / 'airflow' / 'airflow.db'}")

    try:
        for attempt in ("first run", "second run: unchanged source, snapshot reused"):
            for pipeline in pipelines:
                step(f"4. {pipeline}: {attempt}")
                started = time.monotonic()
                proc = run(str(BIN / "airflow"), "dags", "test", pipeline, env=env, capture=True)
                results = [line for line in (proc.stdout + proc.stderr).splitlines() if "::rayops-result::" in line]
                for line in results:
                    result, _ = json.JSONDecoder().raw_decode(line.split("::rayops-result::", 1)[1])
                    print("job result:", json.dumps(result))
                print(f"{pipeline}: succeeded in {time.monotonic() - started:.1f} s")
        snapshots = sorted((state / "artifacts" / "snapshots").glob("*/*/manifest.json"))
        step("5. snapshots written")
        for manifest in snapshots:
            body = json.loads(manifest.read_text())
            print(f"{manifest.parent}: rows={body.get('rows')} hash={str(body.get('content_hash'))[:12]}")
    finally:
        if not args.keep_ray:
            step("6. stop the embedded Ray head")
            subprocess.run([str(BIN / "python"), "-m", "airflow_provider_rayops.backends.local", "stop"], env=env, cwd=ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main())
