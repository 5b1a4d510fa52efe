"""Serving throughput and latency: the pipeline's Ray Serve endpoint against `mlflow models serve`,
side by side in one run, on the same registered model version and the same requests.

    .venv/bin/python benchmarks/serve.py --seconds 10 --write benchmarks/SERVE_RESULTS.md

- the model: a TabularMLP fitted on 3,000 seeded churn rows and logged as the train job logs it
  (a pyfunc of raw rows), registered as `bench-churn` version 1 in an MLflow store of its own;
- rayops: the endpoint as DeployRayServeOperator deploys it (router + one version application,
  `@serve.batch` of up to 32 waiting 5 ms, the inference log on), on an embedded Ray head of
  its own; 1 replica, then 2;
- MLflow: `mlflow models serve -m models:/bench-churn/1 --env-manager local` with 1 worker (its
  default), then 2;
- the client: one process of asyncio tasks on aiohttp, each sending one-row requests in MLflow's
  `dataframe_records` format back to back, for `--seconds` after a 2 s warm-up, at 1, 8 and 32
  concurrent clients. What is measured is what a caller waits for: each request's round trip,
  and answered requests per second. Every request must come back 200 (an error stops the run).

Everything binds 127.0.0.1; one server runs at a time (the others are stopped or idle).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from versions import installed  # noqa: E402  (benchmarks/, beside this script)

CLIENTS = (1, 8, 32)
MODEL = "bench-churn"


def prepare_model(work: Path) -> tuple[str, list[dict[str, Any]]]:
    """The registered model version in a store under `work`; (tracking URI, request rows)."""
    uri = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    from mlflow import MlflowClient

    from tests.fixtures.models import churn_snapshot, fit_tiny_model, log_as_training_run

    (work / "data").mkdir()
    snapshot = churn_snapshot(work / "data", rows=3000, seed=3)
    checkpoint = fit_tiny_model(snapshot, folder=work / "checkpoint")
    run_id, model_uri = log_as_training_run(checkpoint, snapshot, experiment="bench-serve")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    client.create_registered_model(MODEL)
    source = client.get_logged_model(model_uri.split("/")[-1]).artifact_location
    client.create_model_version(MODEL, source=source, run_id=run_id, model_id=model_uri.split("/")[-1])
    rows = snapshot["validation"].slice(0, 64).drop(["churned"]).to_pylist()
    return uri, rows


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, server: subprocess.Popen, log: Path, *, timeout: float = 180) -> None:
    import requests

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited ({server.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


CLIENT_CODE = r"""
import asyncio, json, sys, time
import aiohttp

async def main(url, clients, seconds, rows):
    bodies = [json.dumps({"dataframe_records": [row]}).encode() for row in rows]
    latencies, errors = [], []
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async def one(i, record):
            started = time.perf_counter()
            async with session.post(url, data=bodies[i % len(bodies)], headers=headers) as r:
                await r.read()
                if r.status != 200:
                    errors.append(r.status)
            if record:
                latencies.append(time.perf_counter() - started)

        async def loop(k, until, record):
            i = k
            while time.perf_counter() < until:
                await one(i, record)
                i += clients

        warm = time.perf_counter() + 2.0
        await asyncio.gather(*(loop(k, warm, False) for k in range(clients)))
        started = time.perf_counter()
        await asyncio.gather(*(loop(k, started + seconds, True) for k in range(clients)))
        elapsed = time.perf_counter() - started
    print(json.dumps({"requests": len(latencies), "seconds": elapsed, "latencies": latencies, "errors": errors[:5], "error_count": len(errors)}))

url, clients, seconds, rows_file = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
asyncio.run(main(url, clients, seconds, json.loads(open(rows_file).read())))
"""


def drive(url: str, clients: int, seconds: float, rows_file: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CLIENT_CODE, url, str(clients), str(seconds), str(rows_file)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if result["error_count"]:
        raise RuntimeError(f"{url} answered {result['error_count']} request(s) with an error: {result['errors']}")
    latencies = sorted(result["latencies"])
    p99 = latencies[max(0, int(0.99 * len(latencies)) - 1)]
    return {
        "throughput": result["requests"] / result["seconds"],
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": p99 * 1000,
    }


def measure(name: str, url: str, seconds: float, rows_file: Path, table: dict[str, dict[int, dict[str, float]]]) -> None:
    for clients in CLIENTS:
        numbers = drive(url, clients, seconds, rows_file)
        table.setdefault(name, {})[clients] = numbers
        print(
            f"{name:28s} {clients:3d} clients: {numbers['throughput']:8.1f} req/s  p50 {numbers['p50_ms']:7.2f} ms  p99 {numbers['p99_ms']:7.2f} ms",
            flush=True,
        )


def rayops_endpoint(work: Path, tracking_uri: str, replicas: int):
    from airflow_provider_rayops.backends.local import LocalBackend
    from airflow_provider_rayops.config.compute import LocalProfile
    from airflow_provider_rayops.hooks.ray_serve_api import RayServeClient
    from airflow_provider_rayops.serving.inference_log import log_uri
    from airflow_provider_rayops.serving.rollout import Rollout, ServingTarget

    backend = LocalBackend(LocalProfile(backend="local", num_cpus=2, state_dir=str(work / "ray")))
    target = ServingTarget(
        app="bench",
        route_prefix="/bench",
        registered_model=MODEL,
        http_port=free_port(),
        batch={"max_batch_size": 32, "wait_ms": 5},
        replicas={"min": replicas, "max": replicas, "num_cpus": 0.5},
        inference_log={"uri": log_uri(f"file://{work}", "bench"), "sample": 1.0},
        runtime_env={"env_vars": {"MLFLOW_TRACKING_URI": tracking_uri}},
    )
    return backend, lambda: Rollout(RayServeClient(backend.endpoint()), target, log=lambda m: print(m, flush=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per row of the table")
    parser.add_argument("--write", type=Path, default=None, help="write the table (markdown) here")
    args = parser.parse_args()

    table: dict[str, dict[int, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="rayops-bench-serve-") as tmp:
        work = Path(tmp)
        tracking_uri, rows = prepare_model(work)
        rows_file = work / "rows.json"
        rows_file.write_text(json.dumps(rows))

        for workers in (1, 2):
            port = free_port()
            # mlflow starts uvicorn by name: the venv's bin goes first on PATH.
            env = {
                **os.environ,
                "MLFLOW_TRACKING_URI": tracking_uri,
                "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            }
            cmd = [str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m", f"models:/{MODEL}/1",
                   "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", str(workers)]  # fmt: skip
            with open(work / f"mlflow-{workers}.log", "w") as log:
                server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_ready(f"http://127.0.0.1:{port}/ping", server, work / f"mlflow-{workers}.log")
                measure(
                    f"mlflow models serve, {workers} worker{'s' if workers > 1 else ''}",
                    f"http://127.0.0.1:{port}/invocations",
                    args.seconds,
                    rows_file,
                    table,
                )
            finally:
                server.terminate()
                server.wait(timeout=30)

        for replicas in (1, 2):
            backend, rollout_of = rayops_endpoint(work, tracking_uri, replicas)
            with backend.head.lease():
                rollout = rollout_of()
                rollout.first_deploy("1")
                url = rollout.url()
                measure(
                    f"rayops Serve, {replicas} replica{'s' if replicas > 1 else ''}", url + "/", args.seconds, rows_file, table
                )
                stats = rollout.stats(3600)["versions"]["1"]
                print(f"router's count of what v1 answered: {stats['requests']} requests, {stats['errors']} errors", flush=True)
            backend.head.stop()

    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} with {os.cpu_count()} CPUs; ray {installed('ray')}, mlflow {installed('mlflow')}, torch {installed('torch')}.",
        f"One-row requests back to back per client for {args.seconds:g} s after a 2 s warm-up; throughput in answered requests/s, latency in ms.",
        "",
        "| server | " + " | ".join(f"{c} client{'s' if c > 1 else ''}: req/s, p50, p99" for c in CLIENTS) + " |",
        "| --- | " + " | ".join("---:" for _ in CLIENTS) + " |",
    ]
    for name, by_clients in table.items():
        cells = [f"{n['throughput']:.0f}, {n['p50_ms']:.1f}, {n['p99_ms']:.1f}" for n in (by_clients[c] for c in CLIENTS)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    best_mlflow = max(v[32]["throughput"] for k, v in table.items() if k.startswith("mlflow"))
    best_rayops = max(v[32]["throughput"] for k, v in table.items() if k.startswith("rayops"))
    lines += [
        "",
        f"At 32 clients: rayops' best {best_rayops:.0f} req/s is {best_rayops / best_mlflow:.2f}x MLflow's best {best_mlflow:.0f} req/s.",
    ]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    if args.write:
        args.write.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
