"""What a small training run costs beyond its training steps: the train stage as the user waits for it.

    .venv/bin/python benchmarks/stage_overhead.py                 # 3 rounds
    .venv/bin/python benchmarks/stage_overhead.py --rounds 3 --write benchmarks/OVERHEAD_RESULTS.md

A penguins-sized table (344 rows, 3 species as strings, an island, nulls in the numbers and in
`sex`; generated here, nothing is downloaded) goes through the whole lifecycle DAG with
`airflow dags test` on the local backend (an embedded Ray head, warm after round 1; the embedded
MLflow store), as `make demo` runs it. Two pipelines side by side, alternating order:

- `builtin_40`: the built-in loop, 40 epochs: a small snapshot reaches the workers through the
  object store (jobs/train.py IN_MEMORY_MAX_BYTES);
- `ray_data_40`: the same loop called from a project module, so the job treats it as a user
  loop and gives it Ray Datasets (get_dataset_shard): for a small snapshot these are made from
  the arrays the job encoded, with no read tasks (before that, read and encoded by Ray Data tasks).

What is timed is each stage's task from start to end as Airflow recorded it, and the whole
`airflow dags test` command. What one epoch costs is read from the run itself: the live metrics
reach MLflow with the time each epoch was reported, so the median gap between two epochs is the
epoch's wall time (steps, validation, report, checkpoint), beside `epoch_time_s`, the loop's own
measure of its training steps. (A 1-epoch run subtracted from a 40-epoch one drowns the
difference in the noise of the ~25 s fixed cost.)
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from code_shipping import STAGES, dags_folder, task_seconds  # noqa: E402  (benchmarks/, beside this script)
from versions import installed  # noqa: E402

BIN = Path(sys.executable).parent
PIPELINES = {
    "builtin_40": ("rayops.builtin:tabular_mlp", 40),
    "ray_data_40": ("overhead_loops:tabular_mlp_through_ray_data", 40),
}
LOOP_MODULE = '''"""The built-in loop, called as a user loop: the train job gives it Ray Datasets."""

from airflow_provider_rayops.jobs import builtin


def tabular_mlp_through_ray_data(config):
    return builtin.tabular_mlp(config)
'''


def penguins_like(rows: int = 344, seed: int = 7):
    """344 penguins: species (the target), island and sex as strings, four measurements; a few nulls."""
    import numpy as np
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    species = rng.choice(["Adelie", "Gentoo", "Chinstrap"], size=rows, p=[0.44, 0.36, 0.20])
    base = {
        "Adelie": (38.8, 18.3, 190.0, 3700.0),
        "Gentoo": (47.5, 15.0, 217.0, 5076.0),
        "Chinstrap": (48.8, 18.4, 196.0, 3733.0),
    }
    means = np.array([base[s] for s in species])
    values = means + rng.normal(0.0, 1.0, size=means.shape) * np.array([2.5, 1.0, 7.0, 450.0])
    missing = rng.random(values.shape) < 0.01
    island = np.where(species == "Gentoo", "Biscoe", rng.choice(["Dream", "Torgersen", "Biscoe"], size=rows))
    sex = rng.choice(["male", "female", None], size=rows, p=[0.49, 0.48, 0.03])
    columns = {"species": pa.array(species), "island": pa.array(island), "sex": pa.array(list(sex), pa.string())}
    for i, name in enumerate(("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g")):
        columns[name] = pa.array(np.round(values[:, i], 1), pa.float64(), mask=missing[:, i])
    return pa.table(columns)


def _project(folder: Path) -> Path:
    from airflow_provider_rayops.jobs.datasets import table_bytes

    configs = folder / "dag_configs"
    configs.mkdir(parents=True)
    (folder / "data").mkdir()
    (folder / "data" / "penguins.csv").write_bytes(table_bytes(penguins_like(), fmt="csv"))
    (folder / "overhead_loops.py").write_text(LOOP_MODULE)
    (configs / "defaults.yaml").write_text((ROOT / "dag_configs" / "defaults.yaml").read_text())
    for name, (entrypoint, epochs) in PIPELINES.items():
        (configs / f"{name}.yaml").write_text(
            textwrap.dedent(
                f"""
                pipeline: {name.replace("_", "-")}
                data: {{source: file://data/penguins.csv, target: species, min_rows: 100}}
                train:
                  entrypoint: {entrypoint}
                  params: {{epochs: {epochs}, lr: 0.01, batch_size: 64}}
                  checkpoint: {{every_epochs: 10, keep: 1}}
                evaluate:
                  metrics: [accuracy]
                  gates: [{{metric: accuracy, min: 0.5}}]
                promote: {{registered_model: {name.replace("_", "-")}}}
                """
            )
        )
    return dags_folder(folder, configs)


def epoch_costs(mlflow_db: Path) -> dict[str, tuple[float, float]]:
    """Per experiment: (median ms between two epochs' metrics reaching MLflow, median epoch_time_s in ms)."""
    import sqlite3

    out: dict[str, tuple[list[float], list[float]]] = {}
    with sqlite3.connect(mlflow_db) as conn:
        runs = conn.execute("select r.run_uuid, e.name from runs r join experiments e on r.experiment_id = e.experiment_id")
        for run_id, experiment in runs.fetchall():
            stamps = [t for (t,) in conn.execute(
                "select timestamp from metrics where run_uuid = ? and key = 'train_loss' order by step", (run_id,)
            )]  # fmt: skip
            steps = [v * 1000 for (v,) in conn.execute(
                "select value from metrics where run_uuid = ? and key = 'epoch_time_s'", (run_id,)
            )]  # fmt: skip
            gaps, times = out.setdefault(experiment, ([], []))
            gaps += [b - a for a, b in itertools.pairwise(stamps)]
            times += steps
    return {name: (statistics.median(g), statistics.median(t)) for name, (g, t) in out.items() if g and t}


def results_table(
    results: dict[str, list[dict[str, float]]], rounds: int, load: list[float], epochs: dict[str, tuple[float, float]]
) -> str:
    later = {name: {k: statistics.median(r[k] for r in runs[1:] or runs) for k in runs[0]} for name, runs in results.items()}
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{', '.join(f'{d} {installed(d)}' for d in ('ray', 'apache-airflow', 'torch', 'mlflow'))}; "
        f"load average {load[0]:.1f} at start, {load[-1]:.1f} at end.",
        f"Penguins-sized data (344 rows, 3 classes, strings and nulls), local backend, embedded MLflow; {rounds} rounds, "
        "alternating order; medians of rounds 2 and later (a warm head).",
        "",
        "| stage (seconds, as Airflow recorded the task) | built-in, small-data path | through Ray Data | Ray Data / built-in |",
        "| --- | ---: | ---: | ---: |",
    ]
    for stage in (*STAGES, "airflow dags test"):
        a, b = (later[name][stage] for name in ("builtin_40", "ray_data_40"))
        lines.append(f"| {stage} | {a:.1f} | {b:.1f} | {b / a:.2f} |")
    lines += ["", "| one epoch (ms, median over every epoch of every run) | wall, epoch to epoch | training steps | the rest |"]
    lines += ["| --- | ---: | ---: | ---: |"]
    for name, (gap, steps) in sorted(epochs.items()):
        lines.append(f"| {name} | {gap:.0f} | {steps:.0f} | {gap - steps:.0f} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", type=Path, help="also write the results table (markdown) here")
    args = parser.parse_args()

    from airflow_provider_rayops.backends.embedded_head import EmbeddedHead

    work = Path(tempfile.mkdtemp(prefix="rayops-bench-overhead-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RAYOPS", "MLFLOW"))}
    env.update(
        AIRFLOW_HOME=str(work / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        RAYOPS_HOME=str(work / "rayops"),
        PYTHONUNBUFFERED="1",
    )
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(_project(work / "project"))
    subprocess.run([str(BIN / "airflow"), "db", "migrate"], env=env, capture_output=True, check=True, timeout=600)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in PIPELINES}
    load = [os.getloadavg()[0]]
    try:
        for round_no in range(args.rounds):
            order = list(PIPELINES) if round_no % 2 == 0 else list(reversed(PIPELINES))
            for name in order:
                dag_id = name.replace("_", "-")
                started = time.monotonic()
                proc = subprocess.run(
                    [str(BIN / "airflow"), "dags", "test", dag_id], env=env, capture_output=True, text=True, timeout=1800
                )
                wall = time.monotonic() - started
                if proc.returncode != 0:
                    print(proc.stdout[-3000:], proc.stderr[-3000:])
                    raise RuntimeError(f"{dag_id} failed in round {round_no + 1}")
                results[name].append({**task_seconds(work / "airflow" / "airflow.db", dag_id), "airflow dags test": wall})
                print(f"round {round_no + 1} {name}: " + ", ".join(f"{k} {v:.1f}s" for k, v in results[name][-1].items()))
        load.append(os.getloadavg()[0])
    finally:
        EmbeddedHead(work / "rayops" / "ray").stop()

    table = results_table(results, args.rounds, load, epoch_costs(work / "rayops" / "mlflow" / "mlflow.db"))
    print("\n" + table)
    if args.write:
        args.write.write_text(f"# Train stage overhead on small data\n\n`{' '.join(sys.argv)}`\n\n{table}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
