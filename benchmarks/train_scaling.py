"""The train job's wall time beside bare PyTorch's, for the same data, model and epochs.

    .venv/bin/python benchmarks/train_scaling.py                       # small and large, 2 rounds
    .venv/bin/python benchmarks/train_scaling.py --sizes small --rounds 1
    .venv/bin/python benchmarks/train_scaling.py --write benchmarks/TRAIN_RESULTS.md

What the user waits for, end to end, at two sizes of the seeded churn set:

- small: 20,000 rows, 40 epochs, batch 2048;
- large: 2,000,000 rows, 2 epochs, batch 8192.

Both sides start from the same ingest snapshot (made before timing) and train the built-in
TabularMLP (hidden 256x256) with the same encoder, batches, optimizer and per-epoch validation:

- job: the train job (`jobs/train.py`) submitted through the Ray Jobs API to a warm embedded head
  (2 CPUs), 1 worker with 1 CPU, as SubmitRayJobOperator submits it; timed from submission until
  the job has ended (process start, imports, snapshot, Ray Train, checkpoints, MLflow run and
  model). Airflow's own task overhead is not in it.
- bare PyTorch: a fresh Python process (`--bare`, this file) that reads both splits, fits the
  encoder, encodes, trains with 1 torch thread (what Ray gives a 1-CPU worker), validates each
  epoch and saves the model and encoder; timed from process start to exit.

The order alternates between rounds; medians over rounds. Goals (Training on real data): the
job within 1.3x of bare PyTorch at 2M rows, and within bare + 10 s at 20k rows. The samples/s
of the training steps alone (the old headline) is shown beside, from the job's MLflow metrics
and the bare run's own measure.
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
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from versions import installed  # noqa: E402  (benchmarks/, beside this script)

SIZES = {
    "small": {"rows": 20_000, "epochs": 40, "batch_size": 2048},
    "large": {"rows": 2_000_000, "epochs": 2, "batch_size": 8192},
}
HIDDEN = [256, 256]
JOB_TIMEOUT_S = 900


def _params(size: dict[str, int]) -> dict[str, Any]:
    return {"epochs": size["epochs"], "batch_size": size["batch_size"], "hidden_sizes": HIDDEN, "lr": 1e-3}


def make_snapshot(folder: Path, rows: int) -> str:
    import pyarrow.parquet as pq

    from airflow_provider_rayops.jobs.datasets import make_churn
    from airflow_provider_rayops.jobs.ingest import ingest

    pq.write_table(make_churn(rows, seed=7), folder / f"churn-{rows}.parquet")
    source = f"file://{folder}/churn-{rows}.parquet"
    return ingest(source=source, target="churned", snapshot_root=f"file://{folder}/snapshots")["snapshot_uri"]


def bare(snapshot_uri: str, params: dict[str, Any], out: str) -> dict[str, Any]:
    """The bare PyTorch side (run in its own process by `--bare`): read, encode, train, validate, save."""
    import torch

    from airflow_provider_rayops.jobs import builtin, modeling, train

    torch.set_num_threads(1)
    params = builtin.tabular_mlp_params(params)
    snapshot = train.load_snapshot(snapshot_uri)
    rows, validation = snapshot.read(train.TRAIN_SPLIT), snapshot.read(train.VALIDATION_SPLIT)
    encoder = modeling.FeatureEncoder.fit(snapshot.manifest, rows)
    device = torch.device("cpu")
    x, y = builtin.to_device(encoder.transform(rows), encoder.encode_target(rows), device)
    x_val, y_val = builtin.to_device(encoder.transform(validation), encoder.encode_target(validation), device)
    torch.manual_seed(params["seed"])
    model = modeling.TabularMLP(encoder.num_features, encoder.num_outputs, params["hidden_sizes"], params["dropout"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
    autocast, scaler, _ = builtin.precision_context("auto", device)
    loss_fn = builtin.loss_function(encoder.task, params["loss"])
    steps = -(-x.shape[0] // params["batch_size"])
    generator = torch.Generator(device=device)
    rates, metrics = [], {}
    for epoch in range(1, params["epochs"] + 1):
        generator.manual_seed(epoch)
        started = time.perf_counter()
        batches = builtin.device_batches(x, y, batch_size=params["batch_size"], steps=steps, generator=generator)
        _, seen = builtin.train_epoch(model, optimizer, batches, autocast=autocast, scaler=scaler, device=device, loss_fn=loss_fn)
        rates.append(float(seen) / (time.perf_counter() - started))
        metrics = builtin.evaluate(
            model, x_val, y_val, num_classes=encoder.num_classes, autocast=autocast, task=encoder.task, loss_fn=loss_fn
        )
    Path(out).mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), Path(out) / "model.pt")
    (Path(out) / "encoder.json").write_text(json.dumps(encoder.to_json()))
    return {"samples_per_s": statistics.median(rates[1:] or rates), "val_loss": metrics.get("val_loss")}


def run_bare(snapshot_uri: str, params: dict[str, Any], folder: Path) -> dict[str, Any]:
    out = folder / f"bare-{uuid.uuid4().hex[:6]}"
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--bare", snapshot_uri, json.dumps(params), str(out)],
        capture_output=True, text=True, check=True, timeout=JOB_TIMEOUT_S,
    )  # fmt: skip
    wall = time.perf_counter() - started
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "wall_s": wall}


def run_job(client: Any, snapshot_uri: str, params: dict[str, Any], folder: Path, env: dict[str, str]) -> dict[str, Any]:
    from airflow_provider_rayops.jobs import tracking
    from airflow_provider_rayops.jobs.runtime import JOB_ARGS_ENV, parse_result

    args = {
        "snapshot_uri": snapshot_uri,
        "entrypoint": "rayops.builtin:tabular_mlp",
        "params": params,
        "scaling": {"num_workers": 1, "use_gpu": False, "resources_per_worker": {"CPU": 1}},
        "checkpoint": {"every_epochs": params["epochs"], "keep": 1},
        "max_failures": 0,
        "run_root": f"file://{folder}/runs/{uuid.uuid4().hex[:8]}",
        "experiment": "train-scaling",
    }
    submission = f"bench-train-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    client.submit(
        submission_id=submission,
        entrypoint="python -m airflow_provider_rayops.jobs.train",
        runtime_env={"env_vars": {JOB_ARGS_ENV: json.dumps(args), **env}},
    )
    while not (info := client.get_job(submission)).status.is_terminal():
        if time.perf_counter() - started > JOB_TIMEOUT_S:
            client.stop(submission)
            raise TimeoutError(f"{submission} still running after {JOB_TIMEOUT_S} s")
        time.sleep(0.1)
    wall = time.perf_counter() - started
    logs = client.get_logs(submission)
    result = parse_result(logs)
    if result is None:
        raise RuntimeError(f"{submission} ended {info.status} without a result:\n{logs[-3000:]}")
    history = tracking.client().get_metric_history(result["mlflow_run_id"], "samples_per_s")
    rates = [m.value for m in sorted(history, key=lambda m: m.step)]
    phases = dict(
        line.removeprefix("rayops phase ").split(": ", 1) for line in logs.splitlines() if line.startswith("rayops phase ")
    )
    return {
        "samples_per_s": statistics.median(rates[1:] or rates),
        "val_loss": result["metrics"].get("val_loss"),
        "wall_s": wall,
        "phases": {name: float(value.removesuffix(" s")) for name, value in phases.items()},
    }


FLOOR_SCRIPT = """
import ray
from ray.train import ScalingConfig
from ray.train.torch import TorchTrainer


def loop(config):
    import ray.train

    ray.train.report({"epoch": 1})


ray.init(runtime_env={"env_vars": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.05"}})
TorchTrainer(loop, scaling_config=ScalingConfig(num_workers=1)).fit()
"""


def run_floor(client: Any) -> float:
    """Ray Train's own floor: a job whose TorchTrainer runs a loop that only reports once (no data, no MLflow)."""
    submission = f"bench-floor-{uuid.uuid4().hex[:8]}"
    started = time.perf_counter()
    client.submit(submission_id=submission, entrypoint=f"python -c '{FLOOR_SCRIPT}'", runtime_env={})
    while not (info := client.get_job(submission)).status.is_terminal():
        time.sleep(0.1)
    if info.status.value != "SUCCEEDED":
        raise RuntimeError(f"{submission} ended {info.status}:\n{client.get_logs(submission)[-3000:]}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=sorted(SIZES), default=["small", "large"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--write", type=Path, default=None, help="write the markdown table to this file")
    parser.add_argument("--bare", nargs=3, metavar=("SNAPSHOT", "PARAMS", "OUT"), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.bare:
        print(json.dumps(bare(options.bare[0], json.loads(options.bare[1]), options.bare[2])))
        return 0

    with tempfile.TemporaryDirectory(prefix="rayops-train-bench-") as tmp:
        folder = Path(tmp)
        os.environ["RAYOPS_HOME"] = str(folder / "home")
        env = {"MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db"}
        os.environ.update(env)
        from airflow_provider_rayops.backends.local import LocalBackend
        from airflow_provider_rayops.config.compute import LocalProfile
        from airflow_provider_rayops.hooks.ray_jobs_api import RayJobsClient

        snapshots = {name: make_snapshot(folder, SIZES[name]["rows"]) for name in options.sizes}
        backend = LocalBackend(LocalProfile(backend="local", num_cpus=2))
        results: dict[str, dict[str, list[dict[str, Any]]]] = {name: {"job": [], "bare": []} for name in options.sizes}
        loads = [os.getloadavg()[0]]
        floors: list[float] = []
        with backend.head.lease():
            client = RayJobsClient(backend.endpoint())
            run_job(client, snapshots[options.sizes[0]], {**_params(SIZES["small"]), "epochs": 1}, folder, env)  # warm-up
            for round_ in range(options.rounds):
                floors.append(run_floor(client))
                print(f"round {round_ + 1} Ray Train floor: wall {floors[-1]:.1f} s", flush=True)
                for name in options.sizes:
                    params = _params(SIZES[name])
                    snapshot = snapshots[name]
                    sides = [
                        ("job", lambda s=snapshot, p=params: run_job(client, s, p, folder, env)),
                        ("bare", lambda s=snapshot, p=params: run_bare(s, p, folder)),
                    ]
                    for side, run in sides if round_ % 2 == 0 else reversed(sides):
                        outcome = run()
                        results[name][side].append(outcome)
                        loads.append(os.getloadavg()[0])
                        print(f"round {round_ + 1} {name} {side}: wall {outcome['wall_s']:.1f} s, "
                              f"{outcome['samples_per_s']:,.0f} samples/s", flush=True)  # fmt: skip
        table = render(options, results, loads, floors)
    print(table)
    if options.write:
        options.write.write_text(table)
    return 0


def render(
    options: argparse.Namespace, results: dict[str, dict[str, list[dict[str, Any]]]], loads: list[float], floors: list[float]
) -> str:
    def median(name: str, side: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name][side])

    lines = [
        "# The train job's wall time vs bare PyTorch (CPU)",
        "",
        f"`benchmarks/train_scaling.py --sizes {' '.join(options.sizes)} --rounds {options.rounds}`; built-in TabularMLP "
        f"(hidden {'x'.join(map(str, HIDDEN))}) on the seeded churn snapshot (80% train), 1 worker with 1 CPU vs bare "
        f"PyTorch with 1 thread. {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"ray {installed('ray')}, torch {installed('torch')}, mlflow {installed('mlflow')}; load average {min(loads):.1f} to {max(loads):.1f}. Medians of {options.rounds} rounds.",
        "",
        "| size | bare PyTorch wall (s) | train job wall (s) | job / bare | job - bare (s) | goal | samples/s bare | samples/s job |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    verdicts = []
    for name in options.sizes:
        size = SIZES[name]
        bare_s, job_s = median(name, "bare", "wall_s"), median(name, "job", "wall_s")
        if name == "large":
            goal, met = "job <= 1.3x bare", job_s <= 1.3 * bare_s
        else:
            goal, met = "job <= bare + 10 s", job_s <= bare_s + 10
        verdicts.append(f"- {name}: {goal}: {'met' if met else 'NOT met'} ({job_s / bare_s:.2f}x, {job_s - bare_s:+.1f} s)")
        lines.append(
            f"| {name}: {size['rows']:,} rows x {size['epochs']} epochs, batch {size['batch_size']} | {bare_s:.1f} | {job_s:.1f} | "
            f"{job_s / bare_s:.2f}x | {job_s - bare_s:+.1f} | {goal} | {median(name, 'bare', 'samples_per_s'):,.0f} | "
            f"{median(name, 'job', 'samples_per_s'):,.0f} |"
        )
    lines += [
        "",
        *verdicts,
        "",
        f"Ray Train's own floor here: a job whose TorchTrainer loop only reports once (no data, no MLflow, no model) "
        f"takes {statistics.median(floors):.1f} s from submission to end (median of {len(floors)}).",
        "",
        "Where the job's time went (the `rayops phase` lines of its log; medians, seconds):",
        "",
    ]
    names = sorted({phase for name in options.sizes for r in results[name]["job"] for phase in r["phases"]},
                   key=lambda p: list(results[options.sizes[0]]["job"][0]["phases"]).index(p)
                   if p in results[options.sizes[0]]["job"][0]["phases"] else 99)  # fmt: skip
    lines.append("| phase | " + " | ".join(options.sizes) + " |")
    lines.append("| --- |" + " ---: |" * len(options.sizes))
    for phase in names:
        cells = [f"{statistics.median(r['phases'].get(phase, 0.0) for r in results[name]['job']):.2f}" for name in options.sizes]
        lines.append(f"| {phase} | " + " | ".join(cells) + " |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
