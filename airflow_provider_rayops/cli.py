"""`rayops`: validate, list and render pipeline configs without starting Airflow.

rayops validate [PATH...]   every error as file:line:col: message; exit 1 if any (pre-commit, CI)
rayops list                 pipelines of the config folder, their schedule, stages and compute
rayops render PIPELINE      the task graph and the exact Ray job submissions it would make
rayops schema               the JSON schema of a pipeline file (for editors)
rayops rollback PIPELINE    put the endpoint's previous model version back at 100%, swap the aliases
rayops drift REF CURRENT    per-column drift and the verdict; exit 0 without drift, 1 with, 2 on an error
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from airflow_provider_rayops.config.errors import ConfigError, ConfigIssue
from airflow_provider_rayops.config.loader import (
    DEFAULTS_FILE,
    ConfigDirResult,
    LoadedPipeline,
    load_config_dir,
    load_defaults,
)
from airflow_provider_rayops.config.schema import DriftCorrection, DriftMethod, PipelineSpec
from airflow_provider_rayops.config.yaml_source import load_yaml
from airflow_provider_rayops.factory.loader import config_dir_from_env
from airflow_provider_rayops.factory.plan import (
    REGISTRY_OPERATORS,
    PipelinePlan,
    PlannedTask,
    job_code,
    pipeline_runtime_env,
    plan_pipeline,
)
from airflow_provider_rayops.operators.run_values import preview_run_values


def _load(paths: Sequence[str], config_dir: Path) -> ConfigDirResult:
    if not paths:
        return load_config_dir(config_dir)
    pipelines, errors = [], {}
    by_folder: dict[Path, list[Path]] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            result = load_config_dir(path)
            pipelines += result.pipelines
            errors.update(result.errors)
        elif path.name == DEFAULTS_FILE:
            defaults = load_defaults(path.parent)
            if defaults and defaults.issues:
                errors[str(path)] = ConfigError(defaults.issues)
        elif path.exists():
            by_folder.setdefault(path.parent, []).append(path)
        else:
            errors[str(path)] = ConfigError([_missing_issue(str(path))])
    for folder, files in by_folder.items():
        result = load_config_dir(folder, files=files)
        pipelines += result.pipelines
        errors.update(result.errors)
    return ConfigDirResult(pipelines=pipelines, errors=errors)


def _missing_issue(path: str) -> ConfigIssue:
    return ConfigIssue(path, 1, 1, "", "no such file or folder")


def _entrypoint_issues(loaded: LoadedPipeline) -> list[ConfigIssue]:
    """Import each training loop here, and check built-in loops' params: what `rayops validate`
    can catch before a job fails on the cluster. Not done while Airflow parses DAG files
    (importing torch and user code there would slow every parse)."""
    train = loaded.spec.train
    if train is None:
        return []
    from airflow_provider_rayops.jobs.loops import BUILTIN_PARAMS, resolve_entrypoint
    from airflow_provider_rayops.jobs.runtime import JobInputError

    doc = load_yaml(loaded.source_text, file=loaded.file)
    issues = []
    # The loader admitted only built-in loops, allowlisted packages and modules whose files lie
    # in the project folder (config/policy.py); the latter import from there.
    sys.path.insert(0, loaded.project_dir)
    try:
        entry = resolve_entrypoint(train.entrypoint)
    except JobInputError as exc:
        issues.append(
            doc.issue(("train", "entrypoint"), f"{exc} (skip with --no-import-check if it only exists in the cluster image)")
        )
        return issues
    finally:
        sys.path.remove(loaded.project_dir)
    check_params = BUILTIN_PARAMS.get(entry.builtin) if entry.builtin else None
    if check_params is not None:
        try:
            check_params(train.params)
        except JobInputError as exc:
            name = str(exc).split("=", 1)[0].split(":", 1)[0].removeprefix("params.")
            issues.append(doc.issue(("train", "params", name), str(exc)))
    return issues


def _shipped_code_issues(loaded: LoadedPipeline) -> list[ConfigIssue]:
    """The pipeline's own module must pack under the profile's code_max_mb wherever jobs are sent
    it. Checked here, not while Airflow parses (it reads the module's files, which the parse
    cache does not watch); jobs check it again when they are submitted."""
    from airflow_provider_rayops.backends.cluster_code import code_mode, pipeline_packages
    from airflow_provider_rayops.backends.code_package import CodeNotShippable

    profile = loaded.spec.profile
    if code_mode(profile) == "image":
        return []  # nothing is shipped: the cluster's image must have it (checked there)
    try:
        pipeline_packages(job_code(loaded), max_mb=getattr(profile, "code_max_mb", None))
    except CodeNotShippable as exc:
        return [load_yaml(loaded.source_text, file=loaded.file).issue(("train", "entrypoint"), str(exc))]
    return []


def cmd_validate(args: argparse.Namespace) -> int:
    result = _load(args.paths, args.config_dir)
    valid = []
    for loaded in result.pipelines:
        issues = _shipped_code_issues(loaded) + (_entrypoint_issues(loaded) if args.import_check else [])
        if issues:
            result.errors[loaded.file] = ConfigError(issues)
        else:
            valid.append(loaded)
    result = ConfigDirResult(pipelines=valid, errors=result.errors)
    for error in result.errors.values():
        print(error, file=sys.stderr)
    total = sum(len(e.issues) for e in result.errors.values())
    print(f"{len(result.pipelines)} pipeline(s) valid, {len(result.errors)} file(s) with {total} error(s)")
    return 1 if result.errors else 0


def cmd_list(args: argparse.Namespace) -> int:
    result = load_config_dir(args.config_dir)
    rows = [("PIPELINE", "SCHEDULE", "COMPUTE", "STAGES", "FILE")]
    for p in result.pipelines:
        stages = ",".join([*dict.fromkeys(t.stage for t in plan_pipeline(p).tasks), *(["monitor"] if p.spec.monitor else [])])
        schedule = ",".join([p.spec.schedule or "-", *(["drift"] if p.spec.monitor else [])])
        rows.append((p.spec.pipeline, schedule, f"{p.spec.compute} ({p.spec.profile.backend})", stages, Path(p.file).name))
    for file in result.errors:
        rows.append(("(invalid)", "-", "-", "-", Path(file).name))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    if result.errors:
        print(f"\n{len(result.errors)} invalid file(s): run `rayops validate` for the errors", file=sys.stderr)
    return 1 if result.errors else 0


def _find_pipeline(args: argparse.Namespace) -> LoadedPipeline | None:
    """The pipeline named `args.pipeline` in the config folder; None (with the reason printed) if not there."""
    result = load_config_dir(args.config_dir)
    match = [p for p in result.pipelines if p.spec.pipeline == args.pipeline]
    if match:
        return match[0]
    broken = [e for f, e in result.errors.items() if Path(f).stem == args.pipeline]
    if broken:
        print(broken[0], file=sys.stderr)
    else:
        known = ", ".join(sorted(p.spec.pipeline for p in result.pipelines)) or "(none)"
        print(f"rayops: no pipeline {args.pipeline!r} in {args.config_dir}; known: {known}", file=sys.stderr)
    return None


def cmd_render(args: argparse.Namespace) -> int:
    loaded = _find_pipeline(args)
    if loaded is None:
        return 1
    plan = plan_pipeline(loaded)
    if args.backend == "kuberay":
        return _render_kuberay(plan, args.compute)
    params = {p.name: p.default for p in plan.params}
    out: dict[str, Any] = {
        "dag_id": plan.dag_id,
        "schedule": plan.spec.schedule,
        "compute": {"profile": plan.spec.compute, **plan.spec.profile.model_dump(mode="json")},
        "params": params,
        "tasks": [_render_task(t) for t in plan.tasks],
        # The <pipeline>__monitor DAG's check; its drift event also starts this DAG.
        "monitor": plan.spec.monitor.model_dump(mode="json") if plan.spec.monitor else None,
    }
    if args.format == "json":
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"DAG {plan.dag_id}  schedule={plan.spec.schedule or 'manual'}  compute={plan.spec.compute} ({plan.spec.profile.backend})"
    )
    print("params (override when triggering): " + ", ".join(f"{k}={v!r}" for k, v in params.items()))
    if out["monitor"]:
        print(f"also started by the drift events of {plan.dag_id}__monitor: {json.dumps(out['monitor'])}")
    for task in out["tasks"]:
        arrow = f"  <- {', '.join(task['upstream'])}" if task["upstream"] else ""
        print(f"\n[{task['task_id']}] {task['operator']}{arrow}")
        for key, value in (task.get("submission") or task.get("arguments") or {}).items():
            if value is not None:
                print(f"  {key}: {json.dumps(value)}")
    return 0


def _render_kuberay(plan: PipelinePlan, compute: str | None) -> int:
    """The RayJob each job task of a run with default params creates, as YAML documents (`kubectl
    apply -f` takes them as they are). Values known only at run time show as <placeholders>."""
    import yaml

    from airflow_provider_rayops.backends.kuberay.manifests import RayJobRequest, ray_job
    from airflow_provider_rayops.config.compute import KubeRayProfile
    from airflow_provider_rayops.operators.job_spec import JobIdentity, job_runtime_env, submission_id

    spec = plan.spec
    kuberay = {name: p for name, p in spec.compute_profiles.items() if isinstance(p, KubeRayProfile)}
    name = compute or (spec.compute if spec.compute in kuberay else next(iter(sorted(kuberay)), None))
    if name not in kuberay:
        known = ", ".join(sorted(kuberay)) or "none"
        print(
            f"rayops render: no kuberay compute profile {name!r} for {spec.pipeline} (kuberay profiles: {known})", file=sys.stderr
        )
        return 1
    profile = kuberay[name]
    if plan.code.modules:
        print(
            f"rayops render: {spec.pipeline}'s training code ({', '.join(plan.code.modules)}) must be in the image "
            f"{profile.image}: the kuberay backend ships nothing",
            file=sys.stderr,
        )
    docs = []
    for task in plan.tasks:
        sub = task.submission
        if sub is None:
            continue
        identity = JobIdentity(deployment="<deployment_id>", dag_id=plan.dag_id, run_id="<run_id>", task_id=task.full_id)
        labels, annotations = identity.kube_marks(try_number=1)
        request = RayJobRequest(
            name=identity.resource_name(1),
            job_id=submission_id(identity.base, 1),
            entrypoint=sub.entrypoint,
            runtime_env=job_runtime_env(pipeline_runtime_env(spec) or None, job_args=preview_run_values(sub.job_args)),
            metadata=identity.metadata(try_number=1),
            labels=labels,
            annotations=annotations,
            entrypoint_num_cpus=sub.entrypoint_num_cpus,
            entrypoint_num_gpus=sub.entrypoint_num_gpus,
            entrypoint_resources=sub.entrypoint_resources,
            deadline_s=task.timeout_s,
        )
        docs.append(ray_job(profile, request))
    print(f"# {plan.dag_id} on compute profile {name!r} (kuberay): one RayJob per job task, as the first try of a run")
    print("# creates it. At run time the run's id and start, the deployment id and the name's hash are filled in,")
    print("# and the job gets the non-secret settings of the storage and tracking connections; their")
    print(f"# credentials reach the pods only through the profile's secret_env ({', '.join(profile.secret_env) or 'none set'}).")
    print(yaml.safe_dump_all(docs, sort_keys=False), end="")
    return 0


def _render_task(task: PlannedTask) -> dict:
    """The task as a run with default params would send it; values known only at run time
    (upstream results, the run's identity) show as <placeholders>."""
    out: dict = {"task_id": task.full_id, "upstream": list(task.upstream), "timeout_s": task.timeout_s}
    if task.submission is None:
        out["operator"] = REGISTRY_OPERATORS[task.operator]
        out["arguments"] = preview_run_values(task.arguments)
        return out
    sub = task.submission
    out["operator"] = "SubmitRayJobOperator"
    out["submission"] = {
        "job": f"{sub.contract.name} ({sub.contract.args.__name__} -> {sub.contract.result.__name__})",
        "entrypoint": sub.entrypoint,
        "job_args": preview_run_values(sub.job_args),
        "entrypoint_num_cpus": sub.entrypoint_num_cpus,
        "entrypoint_num_gpus": sub.entrypoint_num_gpus,
        "entrypoint_memory": sub.entrypoint_memory,
        "entrypoint_resources": sub.entrypoint_resources,
    }
    return out


def cmd_rollback(args: argparse.Namespace) -> int:
    """What the `<pipeline>__rollback` DAG does, from a shell (same connections and profile)."""
    import getpass

    from airflow.exceptions import AirflowException

    from airflow_provider_rayops.factory.dags import rollback_operator
    from airflow_provider_rayops.hooks.ray_jobs_api import RayopsComputeError

    loaded = _find_pipeline(args)
    if loaded is None:
        return 1
    operator = rollback_operator(plan_pipeline(loaded), task_id="rollback")
    if operator is None:
        print(f"rayops: pipeline {args.pipeline!r} has no deploy section: no endpoint to roll back", file=sys.stderr)
        return 1
    try:
        result = operator.roll_back(to_version=args.to, by=f"rayops rollback ({getpass.getuser()})")
    except (AirflowException, RayopsComputeError, ValueError) as exc:
        print(f"rayops rollback {args.pipeline}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    """The drift computation of the monitor, on any two parquet or CSV sources (paths, file:// or s3://)."""
    try:
        from airflow_provider_rayops.drift import DriftInputError, DriftOptions, compute_drift
    except ImportError as exc:  # a core-only install (an Airflow image without the extra)
        print(
            f"rayops drift: needs numpy, pyarrow and scipy ({exc}); pip install 'airflow-provider-rayops[monitor]'",
            file=sys.stderr,
        )
        return 2
    from airflow_provider_rayops.storage import StorageError

    options = DriftOptions(
        method=args.method,
        threshold=args.threshold,
        columns=dict(args.column or []),
        drift_share=args.drift_share,
        correction=args.correction,
        min_rows=args.min_rows,
        include=args.include,
        exclude=args.exclude or (),
        prediction=args.prediction,
        memory_mb=args.memory_mb,
    )
    try:
        result = compute_drift(args.reference, args.current, options)
        if args.report:
            from airflow_provider_rayops.drift.report import render_html

            Path(args.report).write_text(render_html(result, title=f"Drift: {args.current}"))
    except (DriftInputError, StorageError, OSError) as exc:
        print(f"rayops drift: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # exit 1 means drift: anything else that breaks is an error (2)
        print(f"rayops drift: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        _print_drift(result)
    if result.problems:
        for problem in result.problems:
            print(f"rayops drift: {problem}", file=sys.stderr)
        return 2
    return 1 if result.dataset_drift else 0


def _print_drift(result: Any) -> None:
    rows = [("column", "kind", "method", "statistic", "threshold", "drifted")]
    for group in (result.columns, result.prediction):
        for name, column in group.items():
            shown = column.adjusted if column.adjusted is not None else column.statistic
            rows.append(
                (name, column.kind, column.method, f"{shown:.4g}", f"{column.threshold:g}", "yes" if column.drifted else "no")
            )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print(
        f"reference: {result.reference} ({result.reference_rows} rows)\ncurrent:   {result.current} ({result.current_rows} rows)"
    )
    for row in rows:
        print(
            "  ".join(
                cell.ljust(width) if i < 3 else cell.rjust(width) for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
        )
    for name, reason in result.skipped.items():
        print(f"skipped {name}: {reason}")
    if result.correction != "none":
        print(f"p-values corrected for {len(result.columns)} columns ({result.correction})")
    if result.prediction_drift is not None:
        print(f"prediction drift: {'yes' if result.prediction_drift else 'no'}")
    if result.problems:
        print(f"no verdict: {len(result.problems)} problem(s) with the input")
        return
    drifted, judged = len(result.drifted_columns), len(result.columns)
    verdict = "DATASET DRIFT" if result.dataset_drift else "no dataset drift"
    print(
        f"{verdict}: {drifted} of {judged} columns drifted ({result.drift_share:.0%}; drift at {result.drift_share_limit:.0%} or more)"
    )


def _column_rule(text: str) -> tuple[str, Any]:
    """NAME=METHOD, NAME=THRESHOLD or NAME=METHOD:THRESHOLD."""
    from airflow_provider_rayops.drift import ColumnRule

    methods = typing.get_args(DriftMethod)
    name, sep, rule = text.partition("=")
    method, _, threshold = rule.partition(":")
    if method not in methods and not threshold:
        method, threshold = "", rule  # NAME=THRESHOLD
    expected = f"{text!r}: expected NAME=METHOD[:THRESHOLD] or NAME=THRESHOLD (methods: {', '.join(methods)})"
    if not name or not sep or (method and method not in methods):
        raise argparse.ArgumentTypeError(expected)
    try:
        value = float(threshold) if threshold else None
    except ValueError:
        raise argparse.ArgumentTypeError(expected) from None
    return name, ColumnRule(method=method or None, threshold=value)  # type: ignore[arg-type]


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _share(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text}: expected a share in (0, 1]")
    return value


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(PipelineSpec.model_json_schema(), indent=2))
    return 0


def cmd_head(args: argparse.Namespace) -> int:
    """The embedded Ray head of the `local` backend: start it, stop it, or say where it is."""
    from airflow_provider_rayops.backends.embedded_head import EmbeddedHead, default_state_dir

    head = EmbeddedHead(Path(args.state_dir) if args.state_dir else default_state_dir(), num_cpus=args.num_cpus)
    if args.action == "stop":
        print("stopped the embedded Ray head" if head.stop() else f"no embedded Ray head recorded in {head.state_dir}")
        return 0
    state = head.ensure_head() if args.action == "start" else head.running()
    if state is None:
        print(f"no embedded Ray head answers for {head.state_dir}")
        return 1
    print(f"dashboard: {state.dashboard_url}\ngcs: {state.gcs_address}\ntoken file: {head.token_path}\npid: {state.pid}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rayops", description="Validate, list and render rayops pipeline configs; run the embedded Ray head."
    )
    parser.add_argument(
        "--config-dir",
        type=Path,
        default=None,
        help="folder of pipeline YAML files (default: $RAYOPS_CONFIG_DIR or ./dag_configs)",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check pipeline files; prints file:line:col: message per error, exit 1 if any")
    p.add_argument("paths", nargs="*", help="files or folders (default: the config folder)")
    p.add_argument(
        "--no-import-check",
        dest="import_check",
        action="store_false",
        help="do not import training loops here (when they exist only in the cluster's image)",
    )
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("list", help="list pipelines")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("render", help="show a pipeline's task graph and Ray job submissions")
    p.add_argument("pipeline")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.add_argument(
        "--backend",
        choices=("kuberay",),
        default=None,
        help="print the exact Kubernetes manifests instead: the RayJob of each job task (YAML)",
    )
    p.add_argument(
        "--compute",
        default=None,
        metavar="PROFILE",
        help="with --backend kuberay: the kuberay profile to render for (default: the pipeline's, or the first one defined)",
    )
    p.set_defaults(func=cmd_render)
    p = sub.add_parser("rollback", help="put a pipeline endpoint's previous model version back at 100%% in one step")
    p.add_argument("pipeline")
    p.add_argument("--to", default=None, metavar="VERSION", help="serve this version instead of the previous alias's")
    p.set_defaults(func=cmd_rollback)
    p = sub.add_parser(
        "drift",
        help="compare CURRENT data with REFERENCE data column by column; exit 0 without drift, 1 with drift, 2 on an error",
        description="Per-column drift with Evidently's DataDriftPreset defaults: a reference over 1,000 rows gets "
        "normed Wasserstein (numeric) or Jensen-Shannon (categorical) at 0.1; a smaller one KS, chi-square or a "
        "Z-test at p < 0.05. The dataset drifts when the share of drifted columns reaches --drift-share.",
    )
    p.add_argument("reference", help="parquet or CSV: a path, file:// or s3:// URI, or a folder/prefix of files")
    p.add_argument("current", help="the data to judge, in the same forms")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument(
        "--method",
        choices=typing.get_args(DriftMethod),
        default=None,
        help="one test for every column (default: the preset's choice)",
    )
    p.add_argument("--threshold", type=float, default=None, help="one threshold for every column (default: the test's)")
    p.add_argument(
        "--column",
        type=_column_rule,
        action="append",
        metavar="NAME=METHOD[:THRESHOLD]",
        help="a column's own test or threshold (repeat)",
    )
    p.add_argument("--drift-share", type=_share, default=0.5, help="share of drifted columns that is dataset drift (default 0.5)")
    p.add_argument(
        "--correction",
        choices=typing.get_args(DriftCorrection),
        default="none",
        help="for p-value tests over many columns (default none, as Evidently)",
    )
    p.add_argument("--min-rows", type=int, default=1, help="fewer rows on a side than this: no verdict (default 1)")
    p.add_argument("--include", type=_names, default=None, metavar="A,B", help="only these columns")
    p.add_argument("--exclude", type=_names, default=None, metavar="A,B", help="not these columns")
    p.add_argument(
        "--prediction",
        type=_names,
        default=None,
        metavar="A,B",
        help="the model's output columns (default: prediction and probability_* when both sides have them)",
    )
    p.add_argument("--report", default=None, metavar="FILE.html", help="also write the HTML report (table and histograms) here")
    p.add_argument("--memory-mb", type=int, default=1024, help="memory for numeric columns read at once (default 1024)")
    p.set_defaults(func=cmd_drift)
    p = sub.add_parser("schema", help="print the JSON schema of a pipeline file")
    p.set_defaults(func=cmd_schema)
    p = sub.add_parser("head", help="start, stop or show the embedded Ray head of the local backend")
    p.add_argument("action", choices=("start", "stop", "status"))
    p.add_argument("--state-dir", default=None, help="the head's state folder (default: $RAYOPS_HOME/ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs a started head offers (default: every core)")
    p.set_defaults(func=cmd_head)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    given = "--config-dir" if args.config_dir is not None else None
    if args.config_dir is None:
        given = "RAYOPS_CONFIG_DIR" if os.environ.get("RAYOPS_CONFIG_DIR") else "the default ./dag_configs"
        args.config_dir = config_dir_from_env()
    reads_folder = args.command in ("list", "render", "rollback") or (args.command == "validate" and not args.paths)
    if reads_folder and not Path(args.config_dir).is_dir():
        print(
            f"{Path(args.config_dir).absolute()}: no such folder (from {given}); give --config-dir or set RAYOPS_CONFIG_DIR",
            file=sys.stderr,
        )
        return 1
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
