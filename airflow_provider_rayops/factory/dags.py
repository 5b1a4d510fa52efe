"""Build Airflow DAGs from loaded pipeline configs."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, BaseOperator, CronTriggerTimetable, Param, TaskGroup

from airflow_provider_rayops.config.errors import ConfigError
from airflow_provider_rayops.config.loader import LoadedPipeline
from airflow_provider_rayops.config.schema import PipelineSpec, parse_duration
from airflow_provider_rayops.factory.plan import REGISTRY_OPERATORS, PipelinePlan, pipeline_runtime_env, plan_pipeline
from airflow_provider_rayops.operators import mlflow_model, serve
from airflow_provider_rayops.operators.config_error import ConfigErrorOperator
from airflow_provider_rayops.operators.ray_job import SubmitRayJobOperator
from airflow_provider_rayops.operators.run_values import UpstreamResult

BROKEN_PREFIX = "broken__"
ROLLBACK_SUFFIX = "__rollback"
MONITOR_SUFFIX = "__monitor"
TAG = "rayops"


def build_pipeline_dag(loaded: LoadedPipeline) -> DAG:
    """The lifecycle DAG of one pipeline: one task group per stage, each task a Ray job."""
    plan = plan_pipeline(loaded)
    spec = plan.spec
    with DAG(
        dag_id=plan.dag_id,
        description=spec.description,
        schedule=_lifecycle_schedule(spec),
        start_date=dt.datetime.fromisoformat(spec.start_date).replace(tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        tags=[TAG, *spec.tags],
        doc_md=_doc(loaded, plan),
        **_paused(spec),
        default_args={
            "owner": spec.owner,
            "retries": spec.retries,
            "retry_delay": dt.timedelta(seconds=plan.retry_delay_s),
            **_alerts(spec),
        },
    ) as dag:
        # Params join after DAG(): passing them to DAG() makes Airflow re-check every default
        # against its JSON schema on each parse (with a schema self-check), 40% of our parse
        # time. PipelineSpec already enforced the same bounds; values given at trigger time
        # are still validated against these schemas (tests/factory/test_dags.py).
        dag.params.update({p.name: Param(p.default, description=p.description, **p.schema) for p in plan.params})
        compute = spec.profile.model_dump(mode="json")
        job_env = pipeline_runtime_env(plan.spec)
        tasks: dict[str, BaseOperator] = {}
        groups: dict[str, TaskGroup] = {}
        for planned in plan.tasks:
            assert planned.timeout_s is not None  # plan_pipeline gives every task its stage's limit
            group = groups.get(planned.stage)
            if group is None:
                group = groups[planned.stage] = TaskGroup(planned.stage)
            if planned.operator != "ray_job":
                # Upstream results arrive as XComArgs, resolved by Airflow without any Jinja; the
                # config's strings go to fields that are not templated (config is data, never code).
                arguments = {
                    key: tasks[value.task_id].output if isinstance(value, UpstreamResult) else value
                    for key, value in planned.arguments.items()
                }
                limit = dt.timedelta(seconds=planned.timeout_s)
                # A person's answer is waited for by Airflow's HITL response timeout, not execution_timeout.
                timeouts = {"response_timeout": limit} if planned.operator == "approve" else {"execution_timeout": limit}
                if planned.operator == "deploy":
                    arguments.update(_serve_arguments(plan), deferrable=True)  # canary holds defer
                    operator = getattr(serve, REGISTRY_OPERATORS[planned.operator])
                else:
                    operator = getattr(mlflow_model, REGISTRY_OPERATORS[planned.operator])
                tasks[planned.full_id] = operator(
                    task_id=planned.task_id, task_group=group, doc_md=planned.doc, **timeouts, **arguments
                )
                continue
            sub = planned.submission
            assert sub is not None
            tasks[planned.full_id] = SubmitRayJobOperator(
                task_id=planned.task_id,
                task_group=group,
                doc_md=planned.doc,
                entrypoint=sub.entrypoint,
                runtime_env=job_env or None,
                code=plan.code,
                job_args=sub.job_args,
                contract=sub.contract,
                entrypoint_num_cpus=sub.entrypoint_num_cpus,
                entrypoint_num_gpus=sub.entrypoint_num_gpus,
                entrypoint_memory=sub.entrypoint_memory,
                entrypoint_resources=sub.entrypoint_resources,
                compute=compute,
                storage_conn_id=spec.storage.conn_id,
                with_mlflow=sub.with_mlflow,
                mlflow_conn_id=spec.tracking.conn_id,
                execution_timeout=dt.timedelta(seconds=planned.timeout_s),
                unreachable_timeout=plan.unreachable_timeout_s,
                # Pipeline stages run for minutes to days: they always free the worker slot.
                deferrable=True,
                templated_config=False,  # config text never reaches Jinja
            )
        for planned in plan.tasks:
            for up in planned.upstream:
                if up not in tasks[planned.full_id].upstream_task_ids:
                    tasks[up] >> tasks[planned.full_id]
    return dag


def _serve_arguments(plan: PipelinePlan) -> dict[str, object]:
    """Where the endpoint runs: the cluster the jobs run on, with their runtime_env."""
    return {"compute": plan.spec.profile.model_dump(mode="json"), "runtime_env": pipeline_runtime_env(plan.spec) or None}


def rollback_dag_id(pipeline_dag_id: str) -> str:
    return f"{pipeline_dag_id}{ROLLBACK_SUFFIX}"


def rollback_operator(plan: PipelinePlan, **kwargs: object) -> serve.RollbackRayServeOperator | None:
    """The operator that puts the pipeline's previous version back at 100% (None without a deploy stage)."""
    deploy = next((t for t in plan.tasks if t.operator == "deploy"), None)
    promote = plan.spec.promote
    if deploy is None or promote is None:
        return None
    arguments = {k: v for k, v in deploy.arguments.items() if k not in ("version", "canary")}
    return serve.RollbackRayServeOperator(
        **arguments,
        **_serve_arguments(plan),
        champion_alias=promote.alias,
        previous_alias=promote.previous_alias,
        **kwargs,
    )


def build_rollback_dag(loaded: LoadedPipeline) -> DAG | None:
    """`<pipeline>__rollback`: trigger it to put the previous version back at 100% in one step
    (Param `version`: another version to serve instead). None for a pipeline without deploy."""
    if loaded.spec.deploy is None:
        return None  # decided before planning: DAG parsing plans each pipeline once more only when it deploys
    plan = plan_pipeline(loaded)
    with DAG(
        dag_id=rollback_dag_id(plan.dag_id),
        description=f"Roll {plan.spec.pipeline}'s endpoint back to its previous model version",
        schedule=None,
        start_date=dt.datetime.fromisoformat(plan.spec.start_date).replace(tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        tags=[TAG, "rollback"],
        default_args=_alerts(plan.spec),
        **_paused(plan.spec),
        doc_md=f"## Roll back {plan.spec.pipeline}\n\nPuts the version with the `previous` alias (or the `version` "
        "Param) back at 100% of the endpoint in one step, then swaps the aliases. Same as "
        f"`rayops rollback {plan.spec.pipeline}`.",
    ) as dag:
        dag.params.update({
            serve.ROLLBACK_VERSION_PARAM: Param(
                "", type="string", pattern=r"^[0-9]*$",
                description="The model version to serve again; empty: the one with the previous alias.",
            )
        })  # fmt: skip
        operator = rollback_operator(
            plan, task_id="rollback", execution_timeout=dt.timedelta(seconds=plan.spec.timeouts.seconds("deploy"))
        )
        assert operator is not None
    return dag


def monitor_dag_id(pipeline_dag_id: str) -> str:
    return f"{pipeline_dag_id}{MONITOR_SUFFIX}"


def drift_asset(pipeline: str) -> Asset:
    """The asset the monitor's drift events are emitted on; the lifecycle DAG is scheduled on it."""
    return Asset(name=f"rayops_drift__{pipeline}", uri=f"rayops://drift/{pipeline}", group="rayops-drift")


def build_monitor_dag(loaded: LoadedPipeline) -> DAG | None:
    """`<pipeline>__monitor`: a DriftSensor on `monitor.schedule`; on drift it emits the pipeline's
    drift asset event, which starts the lifecycle DAG. None for a pipeline without monitor."""
    from airflow_provider_rayops.sensors.drift import DriftSensor

    spec = loaded.spec
    monitor, promote = spec.monitor, spec.promote
    if monitor is None or promote is None:
        return None
    with DAG(
        dag_id=monitor_dag_id(spec.pipeline),
        description=f"Watch {spec.pipeline}'s live data for drift; on drift, start retraining",
        schedule=_schedule(monitor.schedule),
        start_date=dt.datetime.fromisoformat(spec.start_date).replace(tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        tags=[TAG, "monitor"],
        doc_md=f"## Drift monitor of {spec.pipeline}\n\nEach run waits for `min_rows` ({monitor.min_rows}) new live rows, "
        "judges their drift against the champion's training data, writes a report, and on drift emits the asset event "
        f"that starts `{spec.pipeline}` (cool-down {monitor.cooldown}). A check with nothing to retrain for is skipped.",
        default_args={
            "owner": spec.owner,
            "retries": spec.retries,
            "retry_delay": dt.timedelta(seconds=parse_duration(spec.retry_delay)),
            **_alerts(spec),
        },
        **_paused(spec),
    ) as dag:
        DriftSensor(
            task_id="check",
            pipeline=spec.pipeline,
            lifecycle_dag_id=spec.pipeline,
            registered_model=promote.registered_model,
            champion_alias=promote.alias,
            storage_root=spec.storage.root,
            storage_conn_id=spec.storage.conn_id,
            mlflow_conn_id=spec.tracking.conn_id,
            current=monitor.current,
            reference=monitor.reference,
            drift={
                "min_rows": monitor.min_rows,
                "method": monitor.method,
                "threshold": monitor.threshold,
                "columns": {name: rule.model_dump(exclude_none=True) for name, rule in monitor.columns.items()},
                "exclude": list(monitor.exclude),
                "drift_share": monitor.drift_share,
                "correction": monitor.correction,
                "memory_mb": monitor.memory_mb,
            },
            retrain_on_prediction_drift=monitor.retrain_on_prediction_drift,
            performance={**monitor.performance.model_dump(mode="json"), "label": monitor.performance.label or spec.data.target}
            if monitor.performance
            else None,
            new_rows=monitor.new_rows,
            cooldown_s=parse_duration(monitor.cooldown),
            # Where a check larger than memory_mb runs as a Ray job: the cluster of the pipeline's jobs.
            compute=spec.profile.model_dump(mode="json"),
            runtime_env=pipeline_runtime_env(spec) or None,
            poke_interval=parse_duration(monitor.poke_interval),
            timeout=parse_duration(monitor.wait),
            outlets=[drift_asset(spec.pipeline)],
        )
    return dag


def _alerts(spec: PipelineSpec) -> dict[str, Any]:
    """`on_failure_callback` with the pipeline's alerts (none: nothing). A notifier named by import
    path was allowed by the loader (config/policy.py); its arguments are never rendered."""
    import importlib

    from airflow.sdk import BaseNotifier

    from airflow_provider_rayops.notifications.webhook import WebhookNotifier

    callbacks: list[BaseNotifier] = []
    for alert in spec.alerts:
        if alert.webhook is not None:
            callbacks.append(WebhookNotifier(conn_id=alert.webhook, pipeline=spec.pipeline))
            continue
        assert alert.notifier is not None
        module, _, name = alert.notifier.rpartition(".")
        cls = getattr(importlib.import_module(module), name, None)
        if not (isinstance(cls, type) and issubclass(cls, BaseNotifier)):
            raise TypeError(f"alerts: {alert.notifier} is not an Airflow notifier (a BaseNotifier subclass)")
        notifier = cls(**alert.kwargs)
        notifier.template_fields = ()  # config is data: its text never reaches Jinja
        callbacks.append(notifier)
    return {"on_failure_callback": callbacks} if callbacks else {}


def _paused(spec: PipelineSpec) -> dict[str, Any]:
    """`is_paused_upon_creation` when the YAML sets `paused_upon_creation` (else Airflow's own default)."""
    return {} if spec.paused_upon_creation is None else {"is_paused_upon_creation": spec.paused_upon_creation}


def _lifecycle_schedule(spec: PipelineSpec) -> object:
    """The retraining schedule; with a monitor, its cron OR the pipeline's drift asset."""
    schedule = _schedule(spec.schedule)
    if spec.monitor is None:
        return schedule
    asset = drift_asset(spec.pipeline)
    if isinstance(schedule, CronTriggerTimetable):
        return AssetOrTimeSchedule(timetable=schedule, assets=asset)
    return asset  # no cron (or @once / @continuous): drift alone starts retraining


def _schedule(schedule: str | None) -> str | CronTriggerTimetable | None:
    # Retraining runs at the scheduled time, not at the end of a data interval: a trigger
    # timetable. It is also what AssetOrTimeSchedule takes when drift joins the schedule.
    if schedule is None or schedule in ("@once", "@continuous"):
        return schedule
    return CronTriggerTimetable(schedule, timezone="UTC")


def broken_dag_id(config_file: str) -> str:
    return BROKEN_PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "_", Path(config_file).stem)


def build_broken_dag(config_file: str, error: ConfigError) -> DAG:
    """A visible stand-in for a pipeline whose YAML is invalid, carrying its errors."""
    text = str(error)
    with DAG(
        dag_id=broken_dag_id(config_file),
        description=f"Invalid pipeline config {Path(config_file).name}: {len(error.issues)} problem(s)",
        schedule=None,
        start_date=dt.datetime(2025, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        tags=[TAG, "config-error"],
        doc_md=f"## `{Path(config_file).name}` is not a valid rayops pipeline\n\nFix these, then the pipeline's DAG replaces this one:\n\n```\n{text}\n```\n",
    ) as dag:
        ConfigErrorOperator(task_id="config_error", errors=text, config_file=config_file)
    return dag


def _doc(loaded: LoadedPipeline, plan: PipelinePlan) -> str:
    spec = plan.spec
    stages = " -> ".join(dict.fromkeys(t.stage for t in plan.tasks))
    return (
        f"## {spec.pipeline}\n\n{spec.description or ''}\n\n"
        f"- stages: {stages}\n- compute profile: `{spec.compute}` ({spec.profile.backend})\n"
        f"- config: `{loaded.file}` (sha256 `{plan.config_hash[:12]}`)\n\n"
        f"```yaml\n{loaded.source_text}\n```\n"
    )
