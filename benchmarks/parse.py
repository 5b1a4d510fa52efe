"""Parse-time benchmark: rayops' factory against dag-factory building the same DAGs.

    .venv/bin/python benchmarks/parse.py                 # 100, 500, 1000 pipelines, 3 runs each
    .venv/bin/python benchmarks/parse.py --sizes 100 --repeats 1
    .venv/bin/python benchmarks/parse.py --profile 1000  # cProfile of one rayops parse

Needs the `bench` extra (`pip install -e '.[test,bench]'`): dag-factory 1.1.0 installs into
the main venv without changing Airflow or any other pin.

For each size N it generates N varied pipeline YAMLs plus defaults.yaml, and the
dag-factory YAML that builds the same DAGs: the dag-factory files are written from the
plan our factory computes for each pipeline (`plan_pipeline`), so both sides pass the
same DAG arguments, Params and operator kwargs. Before timing, one process builds both
and compares every DAG field by field.

Every measurement is a fresh Python process, the way the dag-processor parses a DAG
file: it times `import airflow.sdk` on its own (the dag-processor has Airflow loaded
already), then the DAG file's work: importing the factory and building every DAG.
rayops is timed with an empty cache folder (first parse) and again with the cache that
run left (re-parse of unchanged files). The order of the competitors rotates between
repeats and the table reports medians, because the machine is noisy. Each run asserts
it built N DAGs with the expected task ids, so it cannot silently time nothing.

Only the standard library is imported at the top: a child process imports what it times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from versions import installed  # benchmarks/versions.py (this folder is on sys.path when run as a script)

ROOT = Path(__file__).resolve().parents[1]
OPERATOR = "airflow_provider_rayops.operators.ray_job.SubmitRayJobOperator"
EXPECTED_TASK_IDS = ["ingest.snapshot"]
GOAL_SECONDS_1000 = 5.0
GOAL_VS_DAG_FACTORY = 3.0
GOAL_REPARSE = 10.0

# --- generating equivalent configs ------------------------------------------------------------

_DOMAINS = ["churn", "fraud", "ltv", "demand", "credit", "upsell", "returns", "leads", "ads", "support"]
_TEAMS = ["growth", "risk", "finance", "supply", "marketing"]
_TARGETS = ["label", "churned", "is_fraud", "revenue_90d", "units", "converted"]
_SCHEDULES = ["@daily", "@weekly", "@hourly", "0 3 * * *", "30 */6 * * 1-5", None, "15 2 * * 0", "@monthly"]


def pipeline_yaml(i: int) -> str:
    """The i-th generated pipeline: names, sources, formats, schedules and overrides vary."""
    import yaml

    domain = _DOMAINS[i % len(_DOMAINS)]
    team = _TEAMS[i % len(_TEAMS)]
    name = f"{domain}_{i:04d}"
    doc: dict = {
        "pipeline": name,
        "description": f"{domain.capitalize()} model {i} for the {team} team.",
        "schedule": _SCHEDULES[i % len(_SCHEDULES)],
        "tags": [team, domain] if i % 2 else [team],
    }
    kind = i % 3
    data: dict = {
        "source": [f"file://data/{name}.parquet", f"s3://lake/{domain}/{name}/", f"file://data/{name}.csv"][kind],
        "target": _TARGETS[i % len(_TARGETS)],
        "split": {"validation": [0.1, 0.2, 0.25, 0.3][i % 4], "seed": i % 97},
        "min_rows": [100, 1000, 5000][i % 3],
    }
    if kind == 2:
        data["format"] = "csv"
    if i % 4 == 1:
        data["features"] = [f"f{j}" for j in range(5 + i % 7)]
    doc["data"] = data
    if kind == 1:
        doc["storage"] = {"root": f"s3://artifacts/{domain}", "conn_id": "rayops_s3"}
    if i % 4 == 3:
        doc["owner"] = team
    if i % 5 == 4:
        doc["retries"] = 3
    if i % 6 == 5:
        doc["retry_delay"] = "5m"
    if i % 7 == 6:
        doc["compute"] = "dev-cluster"
    return yaml.safe_dump(doc, sort_keys=False)


def dag_factory_yaml(loaded) -> str:
    """dag-factory's YAML for the DAG our factory builds from `loaded`.

    Same dag id, description, schedule, start date, catchup, max_active_runs, native
    rendering, default_args (retry_delay as a timedelta), tags, Params with their JSON
    schema (dag-factory's `__type__` casting builds `airflow.sdk.Param`), task group
    `ingest` with task `snapshot` and the same operator kwargs and task doc.
    Differences dag-factory imposes: it adds the tag `dagfactory`, and it appends its own
    YAML dump to doc_md, so doc_md carries our header and dag-factory's dump of its config
    instead of our source text.
    """
    import yaml

    from airflow_provider_rayops.factory.plan import plan_pipeline

    plan = plan_pipeline(loaded)
    spec = plan.spec
    stages = " -> ".join(dict.fromkeys(t.stage for t in plan.tasks))
    dag: dict = {
        "description": spec.description,
        "schedule": spec.schedule if spec.schedule is not None else "none",
        "start_date": spec.start_date,
        "catchup": False,
        "max_active_runs": 1,
        "render_template_as_native_obj": True,
        "tags": ["rayops", *spec.tags],
        "doc_md": f"## {spec.pipeline}\n\n{spec.description or ''}\n\n- stages: {stages}\n"
        f"- compute profile: `{spec.compute}` ({spec.profile.backend})\n",
        "default_args": {
            "owner": spec.owner,
            "retries": spec.retries,
            "retry_delay": {"__type__": "datetime.timedelta", "seconds": plan.retry_delay_s},
        },
        "params": {
            p.name: {"__type__": "airflow.sdk.Param", "default": p.default, "description": p.description, **p.schema}
            for p in plan.params
        },
        "task_groups": {stage: {} for stage in dict.fromkeys(t.stage for t in plan.tasks)},
        "tasks": {},
    }
    compute = spec.profile.model_dump(mode="json")
    for planned in plan.tasks:
        sub = planned.submission
        dag["tasks"][planned.task_id] = {
            "operator": OPERATOR,
            "task_group_name": planned.stage,
            "doc_md": planned.doc,
            "entrypoint": sub.entrypoint,
            "job_args": sub.job_args,
            "entrypoint_num_cpus": sub.entrypoint_num_cpus,
            "entrypoint_num_gpus": sub.entrypoint_num_gpus,
            "entrypoint_memory": sub.entrypoint_memory,
            "entrypoint_resources": sub.entrypoint_resources,
            "compute": compute,
            "storage_conn_id": spec.storage.conn_id,
        }
    # start_date stays a YAML date (dag-factory turns it into a UTC datetime).
    text = yaml.safe_dump({plan.dag_id: dag}, sort_keys=False)
    return text.replace(f"start_date: '{spec.start_date}'", f"start_date: {spec.start_date}")


def generate(root: Path, n: int) -> tuple[Path, Path, Path]:
    """Write N rayops pipelines and their dag-factory twins under root; returns
    (rayops config dir, dag-factory dags folder, dag-factory defaults folder)."""
    from airflow_provider_rayops.config.loader import load_config_dir

    rayops_dir = root / "rayops" / "dag_configs"
    rayops_dir.mkdir(parents=True)
    shutil.copy(ROOT / "dag_configs" / "defaults.yaml", rayops_dir / "defaults.yaml")
    for i in range(n):
        (rayops_dir / f"p{i:04d}.yaml").write_text(pipeline_yaml(i))
    result = load_config_dir(rayops_dir, env={})
    if result.errors or len(result.pipelines) != n:
        raise SystemExit(f"generated configs do not validate: {list(result.errors.items())[:3]}")
    # dag-factory reads defaults.yml from the folders between a file and defaults_config_path,
    # and would try to build DAGs from a defaults.yml inside dags_folder: keep it one level up.
    df_root = root / "dagfactory"
    df_dags = df_root / "dags"
    df_dags.mkdir(parents=True)
    (df_root / "defaults.yml").write_text("default_args:\n  depends_on_past: false\n")
    for loaded in result.pipelines:
        (df_dags / f"{Path(loaded.file).stem}.yml").write_text(dag_factory_yaml(loaded))
    return rayops_dir, df_dags, df_root


# --- one measurement, in a fresh process --------------------------------------------------------


def child(tool: str, folder: str, defaults_folder: str, n: int, verify: bool) -> None:
    """Time import + build the way a DAG file in the dags folder would, print one JSON line."""
    import gc

    t0 = time.perf_counter()
    import airflow.sdk  # noqa: F401  the dag-processor has Airflow imported before it parses a file

    t1 = time.perf_counter()
    gc.freeze()  # as the dag-processor does before it forks a parser (dag_processing/manager.py)
    namespace: dict = {}
    config_s = None
    if tool == "rayops":
        from airflow_provider_rayops.factory import loader

        inner = loader.load_config_dir_cached
        spent = []

        def timed(*args, **kwargs):
            s = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                spent.append(time.perf_counter() - s)

        loader.load_config_dir_cached = timed
        loader.load_pipelines(namespace, config_dir=folder)
        config_s = sum(spent)
    else:
        from dagfactory import load_yaml_dags

        load_yaml_dags(namespace, dags_folder=folder, defaults_config_path=defaults_folder)
    t2 = time.perf_counter()

    from airflow.sdk import DAG

    dags = {k: v for k, v in namespace.items() if isinstance(v, DAG)}
    assert len(dags) == n, f"{tool} built {len(dags)} DAGs, expected {n}: {sorted(dags)[:5]}"
    broken = [d for d in dags if d.startswith("broken__")]
    assert not broken, f"{tool} built broken DAGs: {broken[:5]}"
    for dag in dags.values():
        assert sorted(dag.task_dict) == EXPECTED_TASK_IDS, f"{dag.dag_id}: {sorted(dag.task_dict)}"
        assert type(dag.task_dict["ingest.snapshot"]).__name__ == OPERATOR.rsplit(".", 1)[1]
    # What the dag-processor does next with every DAG of the file; the same work for both factories.
    from airflow.serialization.serialized_objects import DagSerialization

    t3 = time.perf_counter()
    for dag in dags.values():
        DagSerialization.to_dict(dag)
    serialize_s = time.perf_counter() - t3
    out = {
        "tool": tool,
        "n": n,
        "airflow_import_s": t1 - t0,
        "parse_s": t2 - t1,
        "config_s": config_s,
        "serialize_s": serialize_s,
    }
    if verify:
        out["fingerprints"] = {d.dag_id: fingerprint(d) for d in dags.values()}
    print("RESULT " + json.dumps(out, default=str))


def fingerprint(dag) -> dict:
    """What must be equal between the two factories' DAGs (not doc_md, not the `dagfactory` tag)."""
    params = {k: {"default": p.value, "description": p.description, "schema": p.schema} for k, p in dag.params.items()}
    tasks = {}
    for task_id, task in dag.task_dict.items():
        tasks[task_id] = {
            "class": f"{type(task).__module__}.{type(task).__name__}",
            "group": task.task_group.group_id if task.task_group else None,
            "doc_md": task.doc_md,
            "owner": task.owner,
            "retries": task.retries,
            "retry_delay": str(task.retry_delay),
            "upstream": sorted(task.upstream_task_ids),
            **{k: getattr(task, k, "<missing>") for k in _OPERATOR_KWARGS},
        }
    return {
        "description": dag.description,
        "timetable": f"{type(dag.timetable).__name__}({getattr(dag.timetable, 'expression', '')!r}, "
        f"{getattr(dag.timetable, 'timezone', '')})",
        "start_date": dag.start_date.isoformat(),
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "render_template_as_native_obj": dag.render_template_as_native_obj,
        "tags": sorted(set(dag.tags) - {"dagfactory"}),
        "default_args": {k: str(v) for k, v in sorted(dag.default_args.items()) if k != "depends_on_past"},
        "params": params,
        "tasks": tasks,
    }


_OPERATOR_KWARGS = [
    "entrypoint",
    "job_args",
    "entrypoint_num_cpus",
    "entrypoint_num_gpus",
    "entrypoint_memory",
    "entrypoint_resources",
    "compute",
    "storage_conn_id",
]


def run_child(args: list[str], env: dict, profile: bool = False) -> dict:
    cmd = [sys.executable]
    if profile:
        cmd += ["-m", "cProfile", "-s", "cumulative"]
    cmd += [str(Path(__file__).resolve()), "--child", *args]
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=env["BENCH_CWD"])
    wall = time.perf_counter() - start
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"measurement {args} failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    result = json.loads(lines[-1][len("RESULT ") :])
    result["process_s"] = wall
    if profile:
        result["profile"] = proc.stdout
    return result


# --- the driver ---------------------------------------------------------------------------------


def child_env(work: Path) -> dict:
    env = dict(os.environ)
    env.update(
        AIRFLOW_HOME=str(work / "airflow"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__DAGS_FOLDER=str(work / "dags"),
        AIRFLOW__DAG_FACTORY__ENABLE_TELEMETRY="False",  # no network here; never phone home from a benchmark
        DO_NOT_TRACK="1",
        SCARF_NO_ANALYTICS="1",
        PYTHONHASHSEED="0",
        BENCH_CWD=str(work),
    )
    env.pop("RAYOPS_CONFIG_DIR", None)
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 500, 1000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="also write the results as markdown to this file")
    parser.add_argument("--profile", type=int, metavar="N", help="cProfile one rayops parse of N pipelines, cold and warm")
    parser.add_argument("--child", nargs=5, metavar=("TOOL", "FOLDER", "DEFAULTS", "N", "VERIFY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        tool, folder, defaults_folder, n, verify = args.child
        child(tool, folder, defaults_folder, int(n), verify == "1")
        return

    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="rayops-bench-"))
    try:
        env = child_env(work)
        (work / "dags").mkdir()
        sizes = [args.profile] if args.profile else args.sizes
        folders = {}
        for n in sizes:
            t = time.perf_counter()
            folders[n] = generate(work / f"n{n}", n)
            print(f"generated {n} pipelines + dag-factory twins in {time.perf_counter() - t:.1f} s", flush=True)

        def rayops(n: int, cache: Path, **kw) -> dict:
            return run_child(["rayops", str(folders[n][0]), "-", str(n), "0"], {**env, "RAYOPS_CACHE_DIR": str(cache)}, **kw)

        def dagfactory(n: int, verify: str = "0") -> dict:
            return run_child(["dagfactory", str(folders[n][1]), str(folders[n][2]), str(n), verify], env)

        if args.profile:
            n = args.profile
            for label, cache in (
                ("first parse (empty cache)", work / "prof-cache"),
                ("re-parse (warm cache)", work / "prof-cache"),
            ):
                result = rayops(n, cache, profile=True)
                print(f"\n=== rayops, {n} pipelines, {label}: parse {result['parse_s']:.2f} s ===")
                print("\n".join(result["profile"].splitlines()[:45]))
            return

        check_equivalence(folders[min(sizes)], env, min(sizes), work)

        # Warm-up: compile bytecode and fill the page cache so the first timed run is not penalised.
        rayops(min(sizes), work / "warmup-cache")
        dagfactory(min(sizes))

        runs: dict[tuple[str, int], list[dict]] = {}
        for rep in range(args.repeats):
            for n in sizes:
                cache = work / f"cache-{n}-{rep}"
                order = ["rayops", "dagfactory"] if (rep + sizes.index(n)) % 2 == 0 else ["dagfactory", "rayops"]
                for tool in order:
                    if tool == "rayops":
                        runs.setdefault(("cold", n), []).append(rayops(n, cache))
                        runs.setdefault(("warm", n), []).append(rayops(n, cache))
                    else:
                        runs.setdefault(("dagfactory", n), []).append(dagfactory(n))
                print(f"repeat {rep + 1}/{args.repeats}, {n} pipelines done ({time.perf_counter() - started:.0f} s)", flush=True)
        table = render(runs, sizes, args.repeats, time.perf_counter() - started)
        print()
        print(table)
        if args.out:
            args.out.write_text(table)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def check_equivalence(folders: tuple[Path, Path, Path], env: dict, n: int, work: Path) -> None:
    """Both factories must build the same DAGs, or the comparison means nothing."""
    ours = run_child(["rayops", str(folders[0]), "-", str(n), "1"], {**env, "RAYOPS_CACHE_DIR": str(work / "eq-cache")})
    theirs = run_child(["dagfactory", str(folders[1]), str(folders[2]), str(n), "1"], env)
    a, b = ours["fingerprints"], theirs["fingerprints"]
    assert sorted(a) == sorted(b), f"dag ids differ: {sorted(set(a) ^ set(b))[:5]}"
    for dag_id in a:
        if a[dag_id] != b[dag_id]:
            diff = {k: (a[dag_id][k], b[dag_id][k]) for k in a[dag_id] if a[dag_id][k] != b[dag_id][k]}
            raise SystemExit(f"{dag_id}: the two factories built different DAGs: {json.dumps(diff, default=str)[:3000]}")
    print(f"equivalence: {n} DAGs identical in every compared field (doc_md and the `dagfactory` tag aside)", flush=True)


def render(runs: dict, sizes: list[int], repeats: int, total_s: float) -> str:
    med = lambda key, field: statistics.median(r[field] for r in runs[key])  # noqa: E731
    lines = [
        f"Parse time, median of {repeats} fresh processes per cell, seconds "
        f"({platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"Airflow {installed('apache-airflow')}, dag-factory {installed('dag-factory')}; whole run {total_s:.0f} s).",
        "",
        "| pipelines | `import airflow.sdk` | rayops first parse | rayops re-parse | dag-factory | dag-factory / rayops first | first / re-parse | rayops config load first -> re-parse |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in sizes:
        cold, warm, df = med(("cold", n), "parse_s"), med(("warm", n), "parse_s"), med(("dagfactory", n), "parse_s")
        airflow_s = statistics.median(
            r["airflow_import_s"] for k in (("cold", n), ("warm", n), ("dagfactory", n)) for r in runs[k]
        )
        cfg_cold, cfg_warm = med(("cold", n), "config_s"), med(("warm", n), "config_s")
        lines.append(
            f"| {n:,} | {airflow_s:.2f} | {cold:.2f} | {warm:.2f} | {df:.2f} | {df / cold:.1f}x | {cold / warm:.1f}x "
            f"| {cfg_cold:.2f} -> {cfg_warm:.2f} ({cfg_cold / cfg_warm:.0f}x) |"
        )
    lines += [
        "",
        "After parsing, the dag-processor serializes every DAG (`DagSerialization.to_dict`); not part of",
        "the parse times or ratios above, shown because it costs more than the parse itself:",
        "",
        "| pipelines | serialize rayops DAGs | serialize dag-factory DAGs |",
        "| ---: | ---: | ---: |",
    ]
    for n in sizes:
        lines.append(f"| {n:,} | {med(('cold', n), 'serialize_s'):.2f} | {med(('dagfactory', n), 'serialize_s'):.2f} |")
    n = max(sizes)
    cold, warm, df = med(("cold", n), "parse_s"), med(("warm", n), "parse_s"), med(("dagfactory", n), "parse_s")
    airflow_s = med(("cold", n), "airflow_import_s")
    verdict = lambda ok: "met" if ok else "MISSED"  # noqa: E731
    lines += [
        "",
        "Parse = what the DAG file does after Airflow is imported: import the factory, read and validate",
        f"the YAML, build every DAG. Goals at the largest size ({n:,} pipelines):",
        f"- under {GOAL_SECONDS_1000:.0f} s: first parse {cold:.2f} s ({verdict(cold < GOAL_SECONDS_1000)}); "
        f"with `import airflow.sdk` {cold + airflow_s:.2f} s ({verdict(cold + airflow_s < GOAL_SECONDS_1000)})",
        f"- at least {GOAL_VS_DAG_FACTORY:.0f}x faster than dag-factory: {df / cold:.1f}x ({verdict(df / cold >= GOAL_VS_DAG_FACTORY)})",
        f"- re-parse at least {GOAL_REPARSE:.0f}x faster than first parse: {cold / warm:.1f}x ({verdict(cold / warm >= GOAL_REPARSE)})",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
