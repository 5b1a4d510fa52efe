"""Values a task only knows when it runs, put into job arguments as objects, never as templates.

The DAG factory builds a job's arguments from pipeline YAML. Text from YAML must never reach
Jinja (a `{{ ... }}` in a config string would run on the worker, or copy a connection's
password into a job), so job arguments are plain data and the few values known only at run
time are these objects, resolved in Python by `SubmitRayJobOperator` just before it submits:

    TriggerParam("epochs", default=4)            -> the Param a person set when triggering (or its default)
    UpstreamResult("ingest.snapshot", "snapshot_uri") -> a key of an upstream task's result (XCom)
    RunFact("run_id")                            -> dag_id, run_id, task_id, try_number or map_index
    RunFolder("s3://bucket/runs/churn")          -> that prefix plus a path-safe form of the run id
    RunTrigger("kind")                           -> cron, drift, manual...: what started the run

YAML can only produce dicts, lists, strings, numbers and booleans, so nothing in a config can
become one of these: the class of bug is closed by construction, not by escaping strings.
No Airflow import here (the factory's plan and `rayops render` use this module too).
"""

from __future__ import annotations

import abc
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from airflow_provider_rayops.storage.uri import InvalidURIError, is_within, join_uri, resolve_uri

_UNSAFE_SEGMENT = re.compile(r"[^A-Za-z0-9_.=-]+")


class RunValueRefused(ValueError):
    """A value given at trigger time that the pipeline does not allow (e.g. a source outside its roots)."""


class RunValue(abc.ABC):
    """A value resolved from the task's context when it runs."""

    @abc.abstractmethod
    def resolve(self, context: Mapping[str, Any]) -> Any:
        """The value for this task instance."""

    def preview(self) -> Any:
        """What `rayops render` shows before any run."""
        return str(self)


@dataclass(frozen=True)
class TriggerParam(RunValue):
    """A DAG Param by name: its value for this run (set in the trigger form, or its default).

    With `within`, the value is a data URI that must lie under one of these roots; a relative
    `file://` URI resolves against `base_dir` (the project folder).
    """

    name: str
    default: Any = None
    within: tuple[str, ...] = ()
    base_dir: str | None = None

    def resolve(self, context: Mapping[str, Any]) -> Any:
        params = context.get("params") or {}
        value = params.get(self.name, self.default)
        if not self.within:
            return value
        try:
            uri = resolve_uri(str(value), base_dir=self.base_dir)
        except InvalidURIError as exc:
            raise RunValueRefused(f"param {self.name}: {exc}") from None
        if not any(is_within(uri, root) for root in self.within):
            raise RunValueRefused(
                f"param {self.name}={value!r} lies outside the pipeline's allowed roots ({', '.join(self.within)}); "
                "a platform admin can add a root to security.source_roots in defaults.yaml"
            )
        return uri

    def preview(self) -> Any:
        return self.default

    def __str__(self) -> str:
        return f"<param {self.name}>"


@dataclass(frozen=True)
class UpstreamResult(RunValue):
    """The result (XCom return value) of an upstream task, or one key of it."""

    task_id: str
    key: str | None = None

    def resolve(self, context: Mapping[str, Any]) -> Any:
        result = context["ti"].xcom_pull(task_ids=self.task_id)
        if self.key is None:
            return result
        if not isinstance(result, Mapping) or self.key not in result:
            found = sorted(result) if isinstance(result, Mapping) else type(result).__name__
            raise RunValueRefused(f"upstream task {self.task_id} returned no {self.key!r} (found {found})")
        return result[self.key]

    def __str__(self) -> str:
        return f"<result of {self.task_id}>" if self.key is None else f"<{self.key} from {self.task_id}>"


@dataclass(frozen=True)
class RunFact(RunValue):
    """A fact about the running task instance."""

    name: Literal["dag_id", "run_id", "task_id", "try_number", "map_index"]

    def resolve(self, context: Mapping[str, Any]) -> Any:
        return getattr(context["ti"], self.name)

    def __str__(self) -> str:
        return f"<{self.name}>"


# Airflow's DagRunType values -> what started the run, in the user's words.
_TRIGGERS = {"scheduled": "cron", "manual": "manual", "asset_triggered": "asset", "backfill": "backfill"}


@dataclass(frozen=True)
class RunTrigger(RunValue):
    """What started the DAG run (`part="kind"`): cron, drift (the monitor's asset event, whatever
    its reasons: drift, a performance drop, volume), manual, asset (another asset's event) or
    backfill; or, with `part="report"`, the drift report of the event that started it (None for
    other runs, and for an event without a judged check)."""

    part: Literal["kind", "report"] = "kind"

    def resolve(self, context: Mapping[str, Any]) -> Any:
        drift = _drift_event_extra(context)
        if self.part == "report":
            return drift.get("report_html_uri") if drift else None
        if drift:
            return "drift"
        run_type = getattr(context.get("dag_run"), "run_type", None)
        kind = str(getattr(run_type, "value", run_type) or "")
        return _TRIGGERS.get(kind, kind or "manual")

    def preview(self) -> Any:
        return f"<{'trigger' if self.part == 'kind' else 'trigger report'}>"

    def __str__(self) -> str:
        return str(self.preview())


def _drift_event_extra(context: Mapping[str, Any]) -> dict[str, Any] | None:
    """The extra of the newest monitor event among the run's triggering asset events (DriftSensor's summary)."""
    events = context.get("triggering_asset_events") or {}
    found = None
    for asset_events in events.values():
        for event in asset_events:
            extra = getattr(event, "extra", None) or {}
            if isinstance(extra, Mapping) and "reasons" in extra and "champion_version" in extra:
                found = dict(extra)
    return found


def run_folder_name(run_id: str) -> str:
    """A run id as one path segment: the same on every try, so a retry resumes in the same place."""
    return _UNSAFE_SEGMENT.sub("-", run_id).strip("-.") or "run"


@dataclass(frozen=True)
class RunFolder(RunValue):
    """`base` plus the Airflow run as a folder: where one run's checkpoints and reports live."""

    base: str

    def resolve(self, context: Mapping[str, Any]) -> Any:
        return join_uri(self.base, run_folder_name(context["ti"].run_id))

    def __str__(self) -> str:
        return f"{self.base.rstrip('/')}/<run folder>"


def resolve_run_values(value: Any, context: Mapping[str, Any]) -> Any:
    """`value` with every RunValue (and Airflow XComArg) inside it resolved; strings are left verbatim."""
    if isinstance(value, RunValue):
        return value.resolve(context)
    if isinstance(value, Mapping):
        return {key: resolve_run_values(item, context) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [resolve_run_values(item, context) for item in value]
    if hasattr(value, "resolve") and hasattr(value, "iter_references"):  # an Airflow XComArg
        return value.resolve(context)
    return value


def preview_run_values(value: Any) -> Any:
    """`value` as `rayops render` shows it: params as their defaults, the rest as <placeholders>."""
    if isinstance(value, RunValue):
        return value.preview()
    if isinstance(value, Mapping):
        return {key: preview_run_values(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [preview_run_values(item) for item in value]
    return value
