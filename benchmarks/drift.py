"""Drift: `rayops drift` beside Evidently's DataDriftPreset at its defaults, on the same parquet files.

    .venv/bin/python benchmarks/drift.py                                   # both cases
    .venv/bin/python benchmarks/drift.py --cases 100k --rounds 3
    .venv/bin/python benchmarks/drift.py --write benchmarks/DRIFT_RESULTS.md

Two seeded cases of normal columns, a reference and a current file each, a share of the current
columns shifted by 0.2 standard deviations:

- 100k: 100,000 rows x 50 columns, the first 10 shifted;
- 1m: 1,000,000 rows x 100 columns, the first 20 shifted.

Each tool runs in a fresh process per measurement and is timed as a user waits for it: from the
process start to its exit, reading both parquet files, computing, and printing the result.

- rayops: the console script, `rayops drift REF CUR --json`, in this venv.
- Evidently: `Report([DataDriftPreset()]).run(current, reference)` on the two files read with
  pandas, then the per-column values, in a venv of its own (Evidently 0.7 breaks under pandas 3,
  which Airflow 3.3 brings): `--evidently-venv`, made on first use with `evidently==0.7.23` and
  `pandas<3`.

Reported per tool: the wall time (median over rounds; the order of the tools alternates by round),
the compute time the tool reports itself (rayops' `seconds`; Evidently's `run` call), the peak
resident memory of the process (ru_maxrss from wait4), and the columns it flags. Both must flag
the same columns; the script says so when they do not. The machine is shared: the load average
at the start and end is recorded.
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

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CASES = {"100k": (100_000, 50, 10), "1m": (1_000_000, 100, 20)}
SHIFT_STD = 0.2
EVIDENTLY = ["evidently==0.7.23", "pandas<3", "pyarrow>=21"]

EVIDENTLY_CHILD = r"""
import json, sys, time
import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset

ref = pd.read_parquet(sys.argv[1])
cur = pd.read_parquet(sys.argv[2])
started = time.perf_counter()
snapshot = Report([DataDriftPreset()]).run(cur, ref)
seconds = time.perf_counter() - started
flagged = []
for metric in snapshot.dict()["metrics"]:
    config = metric["config"]
    if not config["type"].endswith("ValueDrift"):
        continue
    method = config["method"].lower()
    distance = any(word in method for word in ("distance", "wasserstein", "jensen", "psi"))
    value, threshold = metric["value"], config["threshold"]
    if (value >= threshold) if distance else (value < threshold):
        flagged.append(config["column"])
print(json.dumps({"flagged": flagged, "seconds": seconds}))
"""


def _load() -> float:
    return os.getloadavg()[0]


def make_case(folder: Path, rows: int, columns: int, shifted: int, seed: int = 0) -> tuple[Path, Path]:
    """Reference and current parquet files of `columns` standard normal columns; the first `shifted`
    current columns move by SHIFT_STD."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    ref_path, cur_path = folder / f"ref-{rows}x{columns}.parquet", folder / f"cur-{rows}x{columns}.parquet"
    if ref_path.exists() and cur_path.exists():
        return ref_path, cur_path
    rng = np.random.default_rng(seed)
    for path, shift in ((ref_path, 0.0), (cur_path, SHIFT_STD)):
        table = pa.table({f"c{i:03d}": rng.normal(shift if i < shifted else 0.0, 1.0, rows) for i in range(columns)})
        pq.write_table(table, path)
        del table
    return ref_path, cur_path


def evidently_python(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"making {venv} with {' '.join(EVIDENTLY)} (first run only)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *EVIDENTLY], check=True)
    return python


def timed(command: list[str]) -> dict[str, Any]:
    """Run `command`; its wall time, peak RSS and the JSON it printed last."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode not in (0, 1):  # rayops drift exits 1 on drift
        raise SystemExit(f"{command[0]} failed ({process.returncode}):\n{stderr[-3000:]}")
    return {"wall_s": wall, "peak_mib": usage.ru_maxrss / 1024, "result": json.loads(stdout)}


def run_rayops(ref: Path, cur: Path) -> dict[str, Any]:
    rayops = Path(sys.executable).parent / "rayops"
    measured = timed([str(rayops), "drift", str(ref), str(cur), "--json"])
    result = measured.pop("result")
    return {**measured, "compute_s": result["seconds"], "flagged": sorted(result["drifted_columns"])}


def run_evidently(python: Path, ref: Path, cur: Path) -> dict[str, Any]:
    measured = timed([str(python), "-c", EVIDENTLY_CHILD, str(ref), str(cur)])
    result = measured.pop("result")
    return {**measured, "compute_s": result["seconds"], "flagged": sorted(result["flagged"])}


def measure(case: str, rounds: int, data_dir: Path, evidently: Path) -> dict[str, Any]:
    rows, columns, shifted = CASES[case]
    ref, cur = make_case(data_dir, rows, columns, shifted)
    runs: dict[str, list[dict[str, Any]]] = {"rayops": [], "evidently": []}
    for round_ in range(rounds):
        order = ["rayops", "evidently"] if round_ % 2 == 0 else ["evidently", "rayops"]
        for tool in order:
            load = _load()
            run = run_rayops(ref, cur) if tool == "rayops" else run_evidently(evidently, ref, cur)
            run["load"] = [round(load, 2), round(_load(), 2)]
            runs[tool].append(run)
            print(
                f"{case} round {round_ + 1} {tool}: {run['wall_s']:.2f} s wall, {run['compute_s']:.2f} s compute, "
                f"{run['peak_mib']:.0f} MiB, {len(run['flagged'])} flagged",
                flush=True,
            )
    summary = {}
    for tool, tool_runs in runs.items():
        summary[tool] = {
            "wall_s": statistics.median(r["wall_s"] for r in tool_runs),
            "compute_s": statistics.median(r["compute_s"] for r in tool_runs),
            "peak_mib": max(r["peak_mib"] for r in tool_runs),
            "flagged": tool_runs[0]["flagged"],
            "runs": tool_runs,
        }
    expected = [f"c{i:03d}" for i in range(shifted)]
    return {
        "case": case,
        "rows": rows,
        "columns": columns,
        "shifted": expected,
        "summary": summary,
        "same_flagged": summary["rayops"]["flagged"] == summary["evidently"]["flagged"],
        "speedup": summary["evidently"]["wall_s"] / summary["rayops"]["wall_s"],
    }


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| case | tool | wall s | compute s | peak MiB | columns flagged | Evidently / rayops (wall) |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for result in results:
        for tool in ("evidently", "rayops"):
            s = result["summary"][tool]
            right = s["flagged"] == result["shifted"]
            flagged = f"{len(s['flagged'])}, {'exactly the shifted ones' if right else ', '.join(s['flagged'])}"
            speedup = f"{result['speedup']:.1f}x" if tool == "rayops" else ""
            lines.append(
                f"| {result['rows']:,} x {result['columns']} | {tool} | {s['wall_s']:.2f} | {s['compute_s']:.2f} | "
                f"{s['peak_mib']:.0f} | {flagged} | {speedup} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the 100k case (default 3)")
    parser.add_argument("--rounds-large", type=int, default=1, help="rounds of the 1m case (default 1)")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "rayops-drift-bench")
    parser.add_argument("--evidently-venv", type=Path, default=ROOT / ".rayops" / "bench" / "evidently-venv")
    parser.add_argument("--write", type=Path, default=None, help="write the results as markdown here")
    args = parser.parse_args()
    args.data_dir.mkdir(parents=True, exist_ok=True)
    evidently = evidently_python(args.evidently_venv)
    started_load = _load()
    results = [
        measure(case, args.rounds if case == "100k" else args.rounds_large, args.data_dir, evidently) for case in args.cases
    ]
    text = table(results)
    print(text)
    for result in results:
        if not result["same_flagged"]:
            print(f"{result['case']}: the tools flag different columns", file=sys.stderr)
    if args.write:
        machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
        args.write.write_text(
            "# Drift: rayops drift beside Evidently DataDriftPreset\n\n"
            f"`benchmarks/drift.py`; {machine}; load average {started_load:.2f} at the start, {_load():.2f} at the end.\n"
            f"Normal columns, {SHIFT_STD} std shift on the first tenth/fifth; each tool in a fresh process, wall time "
            "from its start to its exit (reading both parquet files, computing, printing), median of rounds.\n\n"
            f"{text}\n\n```json\n{json.dumps(results, indent=1)}\n```\n"
        )


if __name__ == "__main__":
    main()
