"""Evaluation metrics: the evaluate job's hand-written numpy metrics beside scikit-learn's, same dict.

    .venv/bin/python benchmarks/evaluate_metrics.py       # 10k/100k/1M rows, binary and 5-class; job at 20k and 200k rows
    .venv/bin/python benchmarks/evaluate_metrics.py --sizes 10000 --job-rows 50000 --repeats 1 --job-repeats 1
    .venv/bin/python benchmarks/evaluate_metrics.py --write benchmarks/EVALUATE_RESULTS.md

Needs the `jobs` extra (torch, pyarrow, MLflow; full MLflow brings scikit-learn). "hand-written" is
`jobs.evaluate.classification_metrics`; "scikit-learn" is `sklearn_classification_metrics` below,
the same function on `sklearn.metrics` (the replacement the Architecture issue asked to measure).
Two measurements, each running both side by side in the same run, alternating which goes first:

- the metric call alone: `classification_metrics(y, proba, classes, every metric)` on model-like
  probabilities (float32 logits through `modeling.probabilities`, as the job's models give them;
  so some scores tie) at each size, for a binary and a 5-class target. Both in one warm process
  (scikit-learn already imported); median of `--repeats`. Before timing, both must give the same
  dict, to 1e-9, on these and on edge cases (a class absent from the data, one class only,
  many tied scores, a class the model never predicts); the script stops if they do not.
- the job path as the user waits for it: `jobs.evaluate.main` in a fresh Python process per
  measurement (what a Ray job runs, minus Ray's submission and scheduling), on the seeded churn
  snapshot (`--job-rows` rows before the 80/20 split) with a TabularMLP checkpoint, default
  latency settings, no champion, no MLflow run; median of `--job-repeats`. Timed: the whole
  process, the metric call, and the first `import sklearn.metrics` the call would make (the job
  imports scikit-learn for nothing else).

The machine is shared: the load average at start and end of each measurement is recorded.
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TOLERANCE = 1e-9
METRICS = ["accuracy", "balanced_accuracy", "auc", "precision", "recall", "f1", "log_loss"]


def _load() -> float:
    return os.getloadavg()[0]


# -- the scikit-learn metrics, the same dict as the job's ----------------------------------------


def sklearn_classification_metrics(y: Any, proba: Any, classes: Sequence[Any], names: Sequence[str]) -> dict[str, Any]:
    """`evaluate.classification_metrics` on `sklearn.metrics`: same keys, nulls and per-class rows."""
    import numpy as np
    from sklearn import metrics

    from airflow_provider_rayops.jobs.metrics import finite_or_none as _finite_or_none

    y = np.asarray(y, dtype=np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    k = len(classes)
    pred = proba.argmax(axis=1)
    # Every class of the model gets a row, in `y` or not; a ratio of 0/0 is 0.
    precision, recall, f1, support = metrics.precision_recall_fscore_support(
        y, pred, labels=np.arange(k), average=None, zero_division=0.0
    )
    per_index = [
        {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]), "support": int(support[c])}
        for c in range(k)
    ]

    binary = k == 2
    present = [c for c in range(k) if per_index[c]["support"] > 0]

    def overall(name: str) -> float | None:
        if name == "accuracy":
            return float(metrics.accuracy_score(y, pred))
        if name == "balanced_accuracy":
            # balanced_accuracy_score's definition, from the recalls above (no second pass, and no
            # warning when the model predicts a class the data lacks).
            return float(np.mean([per_index[c]["recall"] for c in present]))
        if name in ("precision", "recall", "f1"):
            return per_index[1][name] if binary else float(np.mean([p[name] for p in per_index]))
        if name == "auc":
            if len(present) < 2:  # one class in the data: undefined (scikit-learn warns, gives nan)
                return None
            if binary:
                return float(metrics.roc_auc_score(y == 1, proba[:, 1]))
            # One-vs-rest over the classes present: roc_auc_score(multi_class="ovr") averages over
            # all the model's classes, and one absent from the data makes it nan.
            return float(np.mean([metrics.roc_auc_score(y == c, proba[:, c]) for c in present]))
        if name == "log_loss":
            # Clipped to [eps, 1 - eps] where the job clips to [eps, 1]: at most 2.2e-16 apart.
            return float(metrics.log_loss(y, proba, labels=np.arange(k)))
        raise KeyError(name)

    return {
        "metrics": {name: _finite_or_none(overall(name)) for name in names},
        "per_class": {str(classes[c]): per_index[c] for c in range(k)},
    }


def implementations() -> dict[str, Callable[..., dict[str, Any]]]:
    from airflow_provider_rayops.jobs import evaluate

    return {"hand-written": evaluate.classification_metrics, "scikit-learn": sklearn_classification_metrics}


# -- data ---------------------------------------------------------------------------------------


def model_like(rows: int, classes: int, seed: int) -> tuple[Any, Any]:
    """(y, proba): uneven classes, float32 logits that favour the true class, softmaxed as the job does."""
    import numpy as np

    from airflow_provider_rayops.jobs.modeling.predictor import probabilities

    rng = np.random.default_rng(seed)
    weights = np.array([0.74, 0.26]) if classes == 2 else np.linspace(2.0, 1.0, classes) / np.linspace(2.0, 1.0, classes).sum()
    y = rng.choice(classes, size=rows, p=weights)
    logits = rng.normal(size=(rows, classes)).astype(np.float32)
    logits[np.arange(rows), y] += 1.2
    return y, probabilities(logits, classes)


def edge_cases() -> dict[str, tuple[Any, Any, list[Any]]]:
    import numpy as np

    rng = np.random.default_rng(5)
    y5, p5 = model_like(5000, 5, seed=1)
    absent = y5 != 4  # class 4 never occurs in the data; the model still predicts it sometimes
    yb, pb = model_like(5000, 2, seed=2)
    tied = np.round(pb, 1)
    tied = tied / tied.sum(axis=1, keepdims=True)
    never = p5.copy()
    never[:, 3] = 0.0  # the model never predicts class 3
    never = never / never.sum(axis=1, keepdims=True)
    one = rng.dirichlet([1.0, 1.0], 500)
    return {
        "a class absent from the data (5-class)": (y5[absent], p5[absent], list("abcde")),
        "one class in the data (binary)": (np.zeros(500, dtype=np.int64), one, [False, True]),
        "scores rounded to 0.1, many ties (binary)": (yb, tied, [False, True]),
        "a class the model never predicts (5-class)": (y5, never, list("abcde")),
    }


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """What differs between two results by more than TOLERANCE (null must match null)."""
    out = []
    if list(a["metrics"]) != list(b["metrics"]) or list(a["per_class"]) != list(b["per_class"]):
        return [f"keys differ: {list(a['metrics'])} {list(a['per_class'])} vs {list(b['metrics'])} {list(b['per_class'])}"]
    pairs = [(f"metrics.{k}", a["metrics"][k], b["metrics"][k]) for k in a["metrics"]]
    for label in a["per_class"]:
        pairs += [(f"per_class.{label}.{k}", v, b["per_class"][label][k]) for k, v in a["per_class"][label].items()]
    for where, x, y in pairs:
        if (x is None) != (y is None) or (x is not None and abs(x - y) > TOLERANCE):
            out.append(f"{where}: {x!r} vs {y!r}")
        elif where.endswith(".support") and (type(x) is not int or type(y) is not int):
            out.append(f"{where}: {type(x).__name__} vs {type(y).__name__}")
    return out


def max_difference(a: dict[str, Any], b: dict[str, Any]) -> float:
    values = [(a["metrics"][k], b["metrics"][k]) for k in a["metrics"]]
    values += [(v, b["per_class"][c][k]) for c in a["per_class"] for k, v in a["per_class"][c].items()]
    return max((abs(x - y) for x, y in values if x is not None and y is not None), default=0.0)


# -- the metric call ------------------------------------------------------------------------------


def metric_call(sizes: list[int], repeats: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    import sklearn.metrics  # noqa: F401  (warm: the import is timed on the job path)

    impls = implementations()
    names = list(impls)
    edges = {}
    for case, (y, proba, classes) in edge_cases().items():
        got = {name: impl(y, proba, classes, METRICS) for name, impl in impls.items()}
        diff = differences(got["hand-written"], got["scikit-learn"])
        if diff:
            raise SystemExit(f"{case}: the implementations differ: {'; '.join(diff)}")
        edges[case] = f"equal (max difference {max_difference(got['hand-written'], got['scikit-learn']):.1e})"
        print(f"check: {case}: {edges[case]}", flush=True)

    rows = []
    for n in sizes:
        for k in (2, 5):
            y, proba = model_like(n, k, seed=n + k)
            classes = [False, True] if k == 2 else [f"c{i}" for i in range(k)]
            results = {name: impls[name](y, proba, classes, METRICS) for name in names}
            diff = differences(results["hand-written"], results["scikit-learn"])
            if diff:
                raise SystemExit(f"{n:,} rows, {k} classes: the implementations differ: {'; '.join(diff)}")
            times: dict[str, list[float]] = {name: [] for name in names}
            load_before = _load()
            for repeat in range(repeats):
                for name in names[repeat % 2 :] + names[: repeat % 2]:
                    start = time.perf_counter()
                    impls[name](y, proba, classes, METRICS)
                    times[name].append(time.perf_counter() - start)
            row = {
                "rows": n,
                "classes": k,
                **{name: statistics.median(t) for name, t in times.items()},
                "max_diff": max_difference(results["hand-written"], results["scikit-learn"]),
                "load": max(load_before, _load()),
            }
            rows.append(row)
            print(
                f"metric call: {n:,} rows, {k} classes: hand-written {row['hand-written']:.3f} s, "
                f"scikit-learn {row['scikit-learn']:.3f} s, max difference {row['max_diff']:.1e}, load {row['load']:.1f}",
                flush=True,
            )
    return rows, edges


# -- the job path ---------------------------------------------------------------------------------


def make_job_inputs(folder: Path, rows: int) -> dict[str, Any]:
    """A churn snapshot of `rows` rows and a TabularMLP checkpoint fitted briefly on its train split."""
    import io

    import pyarrow.parquet as pq
    import torch

    from airflow_provider_rayops import storage
    from airflow_provider_rayops.jobs import modeling
    from airflow_provider_rayops.jobs.datasets import make_churn
    from airflow_provider_rayops.jobs.ingest import ingest

    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(make_churn(rows, seed=7), folder / "churn.parquet")
    snapshot = ingest(source=f"file://{folder}/churn.parquet", target="churned", snapshot_root=f"file://{folder}/snapshots")
    uri = snapshot["snapshot_uri"]
    train = pq.read_table(io.BytesIO(storage.read_bytes(storage.join_uri(uri, "train.parquet")))).slice(0, 50_000)
    encoder = modeling.FeatureEncoder.fit(storage.read_manifest(uri), train)
    x, y = torch.from_numpy(encoder.transform(train)), torch.from_numpy(encoder.encode_target(train))
    torch.manual_seed(0)
    kwargs = {"num_features": encoder.num_features, "num_outputs": encoder.num_outputs, "hidden_sizes": [64, 64], "dropout": 0.0}
    model = modeling.TabularMLP(**kwargs)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(50):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    spec = modeling.ModelSpec(class_path=modeling.TabularMLP.MODEL_CLASS, kwargs=kwargs)
    checkpoint = modeling.save_checkpoint(
        folder / "model", model=model.eval(), encoder=encoder, state={"epoch": 1}, model_spec=spec
    )
    return {
        "args": {"model_uri": f"file://{checkpoint}", "snapshot_uri": uri, "metrics": METRICS},
        "validation_rows": snapshot["rows"]["validation"],
    }


def job_child(variant: str, args_file: str) -> None:
    """One evaluate job in this fresh process; prints its timings as one JSON line."""
    started = time.perf_counter()
    from airflow_provider_rayops.jobs import evaluate

    real = evaluate.classification_metrics if variant == "hand-written" else sklearn_classification_metrics
    timed: dict[str, Any] = {"metric_s": 0.0, "import_s": 0.0, "calls": 0}

    def classification_metrics(*args: Any, **kwargs: Any) -> dict[str, Any]:
        start = time.perf_counter()
        timed.setdefault("sklearn_before", "sklearn" in sys.modules)
        if variant == "scikit-learn" and "sklearn.metrics" not in sys.modules:
            import sklearn.metrics  # noqa: F401  (what the job's first metric call imports)

            timed["import_s"] += time.perf_counter() - start
        result = real(*args, **kwargs)
        timed["metric_s"] += time.perf_counter() - start
        timed["calls"] += 1
        return result

    evaluate.classification_metrics = classification_metrics
    evaluate.main(json.loads(Path(args_file).read_text()))
    print(json.dumps({**timed, "main_s": time.perf_counter() - started}), flush=True)


def job_path(folder: Path, job_rows: list[int], repeats: int) -> list[dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE.parent), os.environ.get("PYTHONPATH")]))}
    out = []
    for rows in job_rows:
        inputs = make_job_inputs(folder / f"job-{rows}", rows)
        args_file = folder / f"job-{rows}.json"
        args_file.write_text(json.dumps(inputs["args"]))

        def run(variant: str, args_file: Path = args_file) -> dict[str, Any]:
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, str(Path(__file__).resolve()), "--job-child", variant, str(args_file)],
                env=env, capture_output=True, text=True, timeout=900,
            )  # fmt: skip
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                raise SystemExit(f"the evaluate job failed ({variant}):\n{proc.stderr[-3000:]}")
            return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process_s": wall}

        run("scikit-learn")  # warm-up, untimed: the OS file cache, MLflow's store
        runs: dict[str, list[dict[str, Any]]] = {"hand-written": [], "scikit-learn": []}
        load_before = _load()
        for repeat in range(repeats):
            for variant in list(runs)[repeat % 2 :] + list(runs)[: repeat % 2]:
                runs[variant].append(run(variant))
                last = runs[variant][-1]
                print(
                    f"job path: {inputs['validation_rows']:,} validation rows, {variant}: process {last['process_s']:.2f} s, "
                    f"metric call {last['metric_s']:.3f} s (import {last['import_s']:.3f} s), load {_load():.1f}",
                    flush=True,
                )

        out.append(
            {
                "validation_rows": inputs["validation_rows"],
                **{
                    f"{v}_{k}": statistics.median(r[k] for r in runs[v])
                    for v in runs
                    for k in ("process_s", "metric_s", "import_s")
                },
                "sklearn_before": any(r["sklearn_before"] for rs in runs.values() for r in rs),
                "load": max(load_before, _load()),
            }
        )
    return out


# -- the report -----------------------------------------------------------------------------------


def render(options: argparse.Namespace, calls: list[dict[str, Any]], edges: dict[str, str], jobs: list[dict[str, Any]]) -> str:
    import numpy
    import sklearn

    loads = [r["load"] for r in calls + jobs]
    lines = [
        "# Evaluation metrics: hand-written numpy vs scikit-learn",
        "",
        f"`benchmarks/evaluate_metrics.py --sizes {' '.join(map(str, options.sizes))} --job-rows "
        f"{' '.join(map(str, options.job_rows))} --repeats {options.repeats} --job-repeats {options.job_repeats}`. {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, numpy {numpy.__version__}, scikit-learn {sklearn.__version__}; "
        f"load average during the runs {min(loads):.1f} to {max(loads):.1f}.",
        "",
        "## The metric call (every metric: accuracy, balanced accuracy, AUC, precision/recall/F1, log loss)",
        "",
        f"Seconds, median of {options.repeats}, one warm process; both give the same dict (largest difference shown).",
        "",
        "| rows | classes | hand-written (s) | scikit-learn (s) | scikit-learn / hand-written | largest difference |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in calls:
        lines.append(
            f"| {r['rows']:,} | {r['classes']} | {r['hand-written']:.3f} | {r['scikit-learn']:.3f} | "
            f"{r['scikit-learn'] / r['hand-written']:.2f}x | {r['max_diff']:.1e} |"
        )
    lines += ["", "Edge cases, compared to 1e-9 before timing:", ""]
    lines += [f"- {case}: {verdict}" for case, verdict in edges.items()]
    lines += [
        "",
        "## The evaluate job as the user waits for it",
        "",
        f"`jobs.evaluate.main` in a fresh process, median of {options.job_repeats}: the whole process, the metric call (scikit-learn's",
        "includes its first `import sklearn.metrics`, shown apart), and the metric call's share of the process.",
        "",
        "| validation rows | process, hand-written (s) | process, scikit-learn (s) | metric call, hand-written (s) "
        "| metric call, scikit-learn (s) | of which import (s) | metric share, hand-written | metric share, scikit-learn |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for j in jobs:
        hw, sk = "hand-written", "scikit-learn"
        lines.append(
            f"| {j['validation_rows']:,} | {j[f'{hw}_process_s']:.2f} | {j[f'{sk}_process_s']:.2f} | {j[f'{hw}_metric_s']:.3f} "
            f"| {j[f'{sk}_metric_s']:.3f} | {j[f'{sk}_import_s']:.3f} | {100 * j[f'{hw}_metric_s'] / j[f'{hw}_process_s']:.1f}% "
            f"| {100 * j[f'{sk}_metric_s'] / j[f'{sk}_process_s']:.1f}% |"
        )
    before = any(j["sklearn_before"] for j in jobs)
    lines += [
        "",
        f"- scikit-learn imported by the job before the metric call: {'yes' if before else 'no'}"
        + ("" if before else " (so the import above is a cost scikit-learn's metrics would add to every evaluate job)."),
        "- The process time is a lower bound of what the user waits for: a Ray job adds submission,",
        "  scheduling and the driver's start on top, so the metric share of a real run is smaller still.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="rows of the metric call")
    parser.add_argument("--job-rows", type=int, nargs="+", default=[100_000, 1_000_000], help="churn rows before the split")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the metric call")
    parser.add_argument("--job-repeats", type=int, default=5, help="fresh job processes per variant and size")
    parser.add_argument("--write", type=Path, default=None, help="write the markdown tables to this file")
    parser.add_argument("--job-child", nargs=2, metavar=("VARIANT", "ARGS_FILE"), help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.job_child:
        job_child(*options.job_child)
        return 0

    with tempfile.TemporaryDirectory(prefix="rayops-eval-bench-") as tmp:
        folder = Path(tmp)
        os.environ.setdefault("RAYOPS_HOME", str(folder / "home"))
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder}/mlflow.db"
        calls, edges = metric_call(options.sizes, options.repeats)
        jobs = job_path(folder, options.job_rows, options.job_repeats)

    table = render(options, calls, edges, jobs)
    print(table)
    if options.write:
        options.write.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
