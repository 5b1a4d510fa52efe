"""Stage wall times before and after a change: the same pipelines on two checkouts, side by side.

    git worktree add --detach /tmp/rayops-base 0c1bfb9 && make -C /tmp/rayops-base venv
    .venv/bin/python benchmarks/before_after.py --baseline /tmp/rayops-base --rounds 3 \\
        --write benchmarks/BEFORE_AFTER_RESULTS.md

Two pipelines, each through the whole lifecycle DAG with `airflow dags test` on the local backend
(an embedded Ray head per checkout, warm after its first run; the embedded MLflow store), as
`make demo` runs them:

- `churn`: the demo's pipeline (dag_configs/churn.yaml, 20,000 generated rows, 4 epochs);
- `penguins_40`: a penguins-sized table (benchmarks/stage_overhead.py: 344 rows, 3 species as
  strings, nulls), the built-in loop for 40 epochs.

Each checkout runs with its own virtual environment (`<checkout>/.venv`), its own defaults.yaml,
Airflow database and state; the pipeline files and data are the same bytes for both. Rounds
alternate which checkout goes first. What is timed is each stage's task from start to end as
Airflow recorded it (promote: its tasks that ran, summed), and the whole `airflow dags test`.
"""

from __future__ import annotations

import argparse
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

from code_shipping import dags_folder, task_seconds  # noqa: E402  (benchmarks/, beside this script)
from stage_overhead import penguins_like  # noqa: E402
from versions import installed  # noqa: E402

STAGES = {
    "ingest": ("ingest.snapshot",),
    "train": ("train.fit",),
    "evaluate": ("evaluate.score",),
    "promote": ("promote.register", "promote.champion"),
}
PENGUINS_YAML = """
pipeline: penguins-40
data: {source: file://data/penguins.csv, target: species, min_rows: 100}
train:
  entrypoint: rayops.builtin:tabular_mlp
  params: {epochs: 40, lr: 0.01, batch_size: 64}
  checkpoint: {every_epochs: 10, keep: 1}
evaluate:
  metrics: [accuracy]
  gates: [{metric: accuracy, min: 0.5}]
promote: {registered_model: penguins-40}
"""
PIPELINES = ("churn", "penguins-40")


def _project(folder: Path, checkout: Path) -> Path:
    """The pipelines and data, with `checkout`'s defaults.yaml; returns the DAG folder."""
    from airflow_provider_rayops.jobs.datasets import make_churn, table_bytes

    configs = folder / "dag_configs"
    configs.mkdir(parents=True)
    (folder / "data").mkdir()
    (folder / "data" / "penguins.csv").write_bytes(table_bytes(penguins_like(), fmt="csv"))
    (folder / "data" / "churn.parquet").write_bytes(table_bytes(make_churn(20_000, seed=7), fmt="parquet"))
    (configs / "defaults.yaml").write_text((checkout / "dag_configs" / "defaults.yaml").read_text())
    (configs / "churn.yaml").write_text((ROOT / "dag_configs" / "churn.yaml").read_text())
    (configs / "penguins-40.yaml").write_text(textwrap.dedent(PENGUINS_YAML))
    return dags_folder(folder, configs)


def _stage_seconds(db: Path, dag_id: str) -> dict[str, float]:
    """Seconds per stage of the DAG's latest run; a stage none of whose tasks ran is left out."""
    took = task_seconds(db, dag_id, skipped_ok=True)
    return {stage: sum(took[t] for t in tasks if t in took) for stage, tasks in STAGES.items() if any(t in took for t in tasks)}


class Side:
    """One checkout: its environment, Airflow home and Ray state, in a folder of its own."""

    def __init__(self, name: str, checkout: Path, work: Path) -> None:
        self.name, self.checkout = name, checkout
        self.bin = checkout / ".venv" / "bin"
        if not (self.bin / "airflow").exists():
            raise SystemExit(f"{checkout} has no .venv with Airflow: run `make -C {checkout} venv` first")
        self.home = work / name
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RAYOPS", "MLFLOW", "VIRTUAL_ENV"))}
        self.env.update(
            PATH=f"{self.bin}:{os.environ.get('PATH', '')}",
            AIRFLOW_HOME=str(self.home / "airflow"),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__DAGS_FOLDER=str(_project(self.home / "project", checkout)),
            RAYOPS_HOME=str(self.home / "rayops"),
            PYTHONUNBUFFERED="1",
        )
        subprocess.run([str(self.bin / "airflow"), "db", "migrate"], env=self.env, capture_output=True, check=True, timeout=600)

    def run(self, dag_id: str) -> dict[str, float]:
        started = time.monotonic()
        proc = subprocess.run(
            [str(self.bin / "airflow"), "dags", "test", dag_id], env=self.env, capture_output=True, text=True, timeout=1800
        )
        wall = time.monotonic() - started
        if proc.returncode != 0:
            print(proc.stdout[-3000:], proc.stderr[-3000:])
            raise RuntimeError(f"{dag_id} failed on {self.name}")
        return {**_stage_seconds(self.home / "airflow" / "airflow.db", dag_id), "whole run": wall}

    def stop(self) -> None:
        subprocess.run([str(self.bin / "rayops"), "head", "stop"], env=self.env, capture_output=True, timeout=120)


def _commit(checkout: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()


def results_table(
    results: dict[tuple[str, str], list[dict[str, float]]], sides: list[Side], rounds: int, load: list[float]
) -> str:
    before, after = sides
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{', '.join(f'{d} {installed(d)}' for d in ('ray', 'apache-airflow', 'torch', 'mlflow'))}; "
        f"load average {load[0]:.1f} at start, {load[-1]:.1f} at end.",
        f"before: {_commit(before.checkout)}, after: {_commit(after.checkout)}; local backend, embedded MLflow; "
        f"{rounds} rounds, alternating order; seconds as Airflow recorded each task, round 1 (a cold head) "
        "and the median of rounds 2 and later (a warm head).",
    ]
    for pipeline in PIPELINES:
        lines += [
            "",
            f"| {pipeline} | before, round 1 | after, round 1 | before, warm | after, warm | after / before (warm) |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        runs = {side.name: results[(side.name, pipeline)] for side in sides}
        for stage in (*STAGES, "whole run"):
            first = [runs[side.name][0].get(stage) for side in sides]
            warm = [
                statistics.median(r[stage] for r in runs[side.name][1:] if stage in r)
                if any(stage in r for r in runs[side.name][1:])
                else None
                for side in sides
            ]
            cells = [f"{v:.1f}" if v is not None else "skipped" for v in (*first, *warm)]
            ratio = f"{warm[1] / warm[0]:.2f}" if None not in warm else ""
            lines.append(f"| {stage} | {' | '.join(cells)} | {ratio} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="checkout of the earlier commit, with its .venv")
    parser.add_argument(
        "--current", type=Path, default=ROOT, help="checkout of the later commit, with its .venv (default: this one)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--write", type=Path, help="also write the results table (markdown) here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="rayops-bench-before-after-"))
    sides = [Side("before", args.baseline.resolve(), work), Side("after", args.current.resolve(), work)]
    results: dict[tuple[str, str], list[dict[str, float]]] = {(s.name, p): [] for s in sides for p in PIPELINES}
    load = [os.getloadavg()[0]]
    try:
        for round_no in range(args.rounds):
            for side in sides if round_no % 2 == 0 else reversed(sides):
                for pipeline in PIPELINES:
                    results[(side.name, pipeline)].append(side.run(pipeline))
                    took = results[(side.name, pipeline)][-1]
                    print(f"round {round_no + 1} {side.name} {pipeline}: " + ", ".join(f"{k} {v:.1f}s" for k, v in took.items()))
        load.append(os.getloadavg()[0])
    finally:
        for side in sides:
            side.stop()

    table = results_table(results, sides, args.rounds, load)
    print("\n" + table)
    if args.write:
        args.write.write_text(f"# Stage wall times before and after\n\n`{' '.join(sys.argv)}`\n\n{table}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
