"""Training throughput: the built-in model in bare PyTorch, and on Ray Train with 1 and 2 workers.

    .venv/bin/python benchmarks/train_scaling.py                  # 200k rows, 4 epochs, batch 2048, 3 repeats
    .venv/bin/python benchmarks/train_scaling.py --rows 50000 --repeats 1
    .venv/bin/python benchmarks/train_scaling.py --write benchmarks/TRAIN_RESULTS.md

All three run the same code on the same data: the seeded churn set, snapshotted by the ingest
job and encoded by the same `FeatureEncoder`; the built-in `TabularMLP` trained by
`jobs.builtin.train_epoch` over `device_batches` (the split sits in device memory, shuffled by
index each epoch, no host sync per step).

- context rows (one run each, after the repeats): bare PyTorch with 2 threads, and plain
  torch.distributed DDP over 2 spawned processes (gloo, 1 thread each, the train split halved):
  what the machine gives without Ray.
- bare PyTorch: one process, no Ray, torch limited to 1 thread, because Ray gives a Ray Train
  worker with 1 CPU exactly one thread (OMP_NUM_THREADS=1); the 2-thread figure is shown too.
- Ray Train: the whole train job (`jobs.train.main`: Ray Data from the snapshot, TorchTrainer,
  checkpoints, MLflow) on a local Ray with 2 CPUs, `num_workers` 1 and 2, 1 CPU per worker
  (DDP over gloo with 2).

Throughput is samples per second of the training steps of an epoch (all workers together,
measured by the loop after the epoch's one sync), the median over epochs after the first
(warm-up), then the median over repeats. The order of the three rotates between repeats.
Wall time of the whole job (start-up, data, checkpoints, MLflow) is reported beside it.

Goals (Training issue): Ray at 1 worker within 10% of bare PyTorch at the same thread count;
2 workers at least 1.6x one worker. The machine is shared: the load average at start and end
of each measurement is recorded, and numbers taken under load are marked.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def _load() -> float:
    return os.getloadavg()[0]


def make_snapshot(folder: Path, rows: int, seed: int) -> str:
    import pyarrow.parquet as pq

    from airflow_provider_rayops.jobs.datasets import make_churn
    from airflow_provider_rayops.jobs.ingest import ingest

    pq.write_table(make_churn(rows, seed=seed), folder / "churn.parquet")
    return ingest(source=f"file://{folder}/churn.parquet", target="churned", snapshot_root=f"file://{folder}/snapshots")[
        "snapshot_uri"
    ]


def bare_pytorch(snapshot_uri: str, params: dict[str, Any], *, threads: int) -> dict[str, Any]:
    """The built-in loop's epoch without Ray: same encoder, model, optimizer, batches."""
    import pyarrow.parquet as pq
    import torch

    from airflow_provider_rayops import storage
    from airflow_provider_rayops.jobs import builtin, modeling

    started = time.perf_counter()
    torch.set_num_threads(threads)
    manifest = storage.read_manifest(snapshot_uri)
    table = pq.read_table(io.BytesIO(storage.read_bytes(storage.join_uri(snapshot_uri, "train.parquet"))))
    encoder = modeling.FeatureEncoder.fit(manifest, table)
    device = torch.device("cpu")
    x, y = builtin.to_device(encoder.transform(table), encoder.encode_target(table), device)
    torch.manual_seed(params["seed"])
    model = modeling.TabularMLP(encoder.num_features, encoder.num_outputs, params["hidden_sizes"], params["dropout"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
    autocast, scaler, _ = builtin.precision_context("auto", device)
    steps = -(-x.shape[0] // params["batch_size"])
    generator = torch.Generator(device=device)
    rates = []
    for epoch in range(1, params["epochs"] + 1):
        generator.manual_seed(epoch)
        t0 = time.perf_counter()
        batches = builtin.device_batches(x, y, batch_size=params["batch_size"], steps=steps, generator=generator)
        loss_sum, seen = builtin.train_epoch(model, optimizer, batches, autocast=autocast, scaler=scaler, device=device)
        total = torch.stack([loss_sum, seen]).tolist()  # the same one sync per epoch as the Ray loop
        rates.append(total[1] / (time.perf_counter() - t0))
    return {"samples_per_s": statistics.median(rates[1:] or rates), "wall_s": time.perf_counter() - started}


def _ddp_worker(rank: int, world: int, port: int, snapshot_uri: str, params: dict[str, Any], out: Any) -> None:
    import pyarrow.parquet as pq
    import torch
    import torch.distributed as dist

    from airflow_provider_rayops import storage
    from airflow_provider_rayops.jobs import builtin, modeling

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    manifest = storage.read_manifest(snapshot_uri)
    table = pq.read_table(io.BytesIO(storage.read_bytes(storage.join_uri(snapshot_uri, "train.parquet"))))
    encoder = modeling.FeatureEncoder.fit(manifest, table)
    rows = table.num_rows // world
    shard = table.slice(rank * rows, rows)
    device = torch.device("cpu")
    x, y = builtin.to_device(encoder.transform(shard), encoder.encode_target(shard), device)
    torch.manual_seed(params["seed"])
    model = torch.nn.parallel.DistributedDataParallel(
        modeling.TabularMLP(encoder.num_features, encoder.num_outputs, params["hidden_sizes"], params["dropout"])
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
    autocast, scaler, _ = builtin.precision_context("auto", device)
    steps = -(-rows // params["batch_size"])
    generator = torch.Generator(device=device)
    rates = []
    for epoch in range(1, params["epochs"] + 1):
        generator.manual_seed(epoch * 1009 + rank)
        dist.barrier()
        t0 = time.perf_counter()
        batches = builtin.device_batches(x, y, batch_size=params["batch_size"], steps=steps, generator=generator)
        loss_sum, seen = builtin.train_epoch(model, optimizer, batches, autocast=autocast, scaler=scaler, device=device)
        total = torch.stack([loss_sum, seen])
        dist.all_reduce(total)
        rates.append(total.tolist()[1] / (time.perf_counter() - t0))
    if rank == 0:
        out.put(statistics.median(rates[1:] or rates))
    dist.destroy_process_group()


def bare_ddp(snapshot_uri: str, params: dict[str, Any], *, world: int = 2) -> dict[str, Any]:
    """Plain torch.distributed (gloo) over `world` processes, 1 thread each: what the machine allows."""
    import socket

    import torch.multiprocessing as mp

    started = time.perf_counter()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.get_context("spawn")
    out = context.Queue()
    mp.start_processes(_ddp_worker, args=(world, port, snapshot_uri, params, out), nprocs=world, join=True, start_method="spawn")
    return {"samples_per_s": out.get(timeout=5), "wall_s": time.perf_counter() - started}


def ray_train(snapshot_uri: str, params: dict[str, Any], *, workers: int, folder: Path, tag: str) -> dict[str, Any]:
    from airflow_provider_rayops.jobs import train

    started = time.perf_counter()
    result = train.main(
        {
            "snapshot_uri": snapshot_uri,
            "entrypoint": "rayops.builtin:tabular_mlp",
            "params": params,
            "scaling": {"num_workers": workers, "use_gpu": False, "resources_per_worker": {"CPU": 1}},
            "checkpoint": {"every_epochs": params["epochs"], "keep": 1},
            "max_failures": 0,
            "run_root": f"file://{folder}/runs/{tag}",
            "experiment": "train-scaling",
        }
    )
    from airflow_provider_rayops.jobs import tracking

    client = tracking.client()
    history = client.get_metric_history(result["mlflow_run_id"], "samples_per_s")
    rates = [m.value for m in sorted(history, key=lambda m: m.step)]
    return {"samples_per_s": statistics.median(rates[1:] or rates), "wall_s": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--write", type=Path, default=None, help="write the markdown table to this file")
    options = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="rayops-train-bench-") as tmp:
        folder = Path(tmp)
        os.environ.setdefault("RAYOPS_HOME", str(folder / "home"))
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"
        import ray

        from airflow_provider_rayops.jobs import builtin

        params = builtin.tabular_mlp_params(
            {"epochs": options.epochs, "batch_size": options.batch_size, "hidden_sizes": options.hidden, "lr": 1e-3}
        )
        snapshot = make_snapshot(folder, options.rows, seed=7)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)

        runs: dict[str, list[dict[str, Any]]] = {}
        cases = [
            ("bare PyTorch, 1 thread", lambda r: bare_pytorch(snapshot, params, threads=1)),
            ("Ray Train, 1 worker", lambda r: ray_train(snapshot, params, workers=1, folder=folder, tag=f"w1-{r}")),
            ("Ray Train, 2 workers", lambda r: ray_train(snapshot, params, workers=2, folder=folder, tag=f"w2-{r}")),
        ]
        for repeat in range(options.repeats):
            order = cases[repeat % len(cases) :] + cases[: repeat % len(cases)]
            for name, run in order:
                load_before = _load()
                outcome = run(repeat)
                outcome["load"] = max(load_before, _load())
                runs.setdefault(name, []).append(outcome)
                print(
                    f"repeat {repeat + 1}: {name}: {outcome['samples_per_s']:,.0f} samples/s, "
                    f"wall {outcome['wall_s']:.1f} s, load {outcome['load']:.1f}",
                    flush=True,
                )
        # Context, not goals: what the second core gives plain PyTorch, in threads and in DDP.
        two_threads = bare_pytorch(snapshot, params, threads=2)
        ddp = bare_ddp(snapshot, params)
        ray.shutdown()

    table = render(options, runs, two_threads, ddp)
    print(table)
    if options.write:
        options.write.write_text(table)
    return 0


def render(
    options: argparse.Namespace, runs: dict[str, list[dict[str, Any]]], two_threads: dict[str, Any], ddp: dict[str, Any]
) -> str:
    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[name])

    bare = median("bare PyTorch, 1 thread", "samples_per_s")
    one = median("Ray Train, 1 worker", "samples_per_s")
    two = median("Ray Train, 2 workers", "samples_per_s")
    loads = [r["load"] for rs in runs.values() for r in rs]
    import torch

    lines = [
        "# Training throughput: bare PyTorch vs Ray Train (CPU)",
        "",
        f"`benchmarks/train_scaling.py --rows {options.rows} --epochs {options.epochs} --batch-size {options.batch_size} "
        f"--hidden {' '.join(map(str, options.hidden))} --repeats {options.repeats}`; built-in TabularMLP on the seeded "
        f"churn snapshot ({options.rows:,} rows, 80% train). {platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, Python {platform.python_version()}; load average during the runs "
        f"{min(loads):.1f} to {max(loads):.1f}.",
        "",
        "| setup | samples/s (median) | vs bare PyTorch 1 thread | vs Ray 1 worker | job wall time (s) |",
        "| --- | ---: | ---: | ---: | ---: |",
        f"| bare PyTorch, 1 thread | {bare:,.0f} | 1.00x | | {median('bare PyTorch, 1 thread', 'wall_s'):.1f} |",
        f"| Ray Train, 1 worker (1 CPU) | {one:,.0f} | {one / bare:.2f}x | 1.00x | {median('Ray Train, 1 worker', 'wall_s'):.1f} |",
        f"| Ray Train, 2 workers (1 CPU each, DDP) | {two:,.0f} | {two / bare:.2f}x | {two / one:.2f}x | {median('Ray Train, 2 workers', 'wall_s'):.1f} |",
        f"| bare PyTorch, 2 threads (context) | {two_threads['samples_per_s']:,.0f} | {two_threads['samples_per_s'] / bare:.2f}x | | {two_threads['wall_s']:.1f} |",
        f"| bare PyTorch DDP, 2 processes x 1 thread, gloo (context) | {ddp['samples_per_s']:,.0f} | {ddp['samples_per_s'] / bare:.2f}x | "
        f"{ddp['samples_per_s'] / one:.2f}x | {ddp['wall_s']:.1f} |",
        "",
        f"- Ray overhead at 1 worker: {100 * (1 - one / bare):+.1f}% (goal: under 10%) -> {'met' if one >= 0.9 * bare else 'NOT met'}",
        f"- 2 workers vs 1: {two / one:.2f}x (goal: at least 1.6x) -> {'met' if two >= 1.6 * one else 'NOT met'}",
        "- Job wall time includes Ray Data, worker start-up, checkpointing and MLflow logging; bare PyTorch's",
        "  includes reading and encoding the snapshot.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
