"""DriftSensor: wait for new live rows, judge drift on them, and start retraining through an asset event.

Each poke (in `reschedule` mode by default: no worker slot is held between pokes):

1. The champion: `registered_model@champion_alias` in MLflow. None yet: keep waiting.
2. The new rows: files of the live data after the monitor's watermark (drift/check.py), counted
   from parquet footers. Fewer than `min_rows`: keep waiting (a check that waits longer than the
   sensor's `timeout` is skipped: `soft_fail`).
3. The check: `compute_drift(reference, new files)`: the reference is the champion's training
   split (its `rayops.snapshot_uri` lineage tag) or `reference`; the model's outputs are judged
   against its predictions on the validation split (`rayops.eval.predictions_uri`).
4. The report: `drift.json` and `drift.html` in storage (`<storage.root>/monitor/<pipeline>/checks/<id>/`),
   logged to the champion's run as artifacts `drift/<id>/...`, its verdict as `rayops.drift.*`
   tags on the version; the "Drift report" extra link opens it in MLflow's UI.
5. The verdict. Input that cannot be judged (a column missing, of another type, or empty):
   the problems are logged and the sensor keeps waiting; the rows are judged again with the
   next ones. Nothing to retrain for (no drift, or a cool-down since the last retraining the
   monitor started, or a lifecycle run already under way): the task is skipped, so no asset event.
   Otherwise the sensor succeeds and Airflow emits the event on `outlets`, its extra carrying the
   summary (reasons, report URIs, drifted columns, the champion's version), which starts the
   lifecycle DAG (scheduled on that asset).

Retraining reasons: `data_drift` (the dataset verdict), `prediction_drift` (when
`retrain_on_prediction_drift`), `volume` (the champion served `new_rows` rows).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowSkipException

from airflow_provider_rayops import tag_names as names
from airflow_provider_rayops.hooks.mlflow import MlflowHook
from airflow_provider_rayops.hooks.s3 import S3StorageHook
from airflow_provider_rayops.links.drift import XCOM_KEY, DriftReportLink, report_link_value
from airflow_provider_rayops.serving.inference_log import log_uri

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_rayops.drift.compute import DriftResult
    from airflow_provider_rayops.storage import S3Settings

# The lifecycle run states that mean a retraining is already under way.
_ACTIVE_RUN_STATES = ["queued", "running"]
REPORT_ARTIFACT_FOLDER = "drift"


class DriftSensor(BaseSensorOperator):
    """Judge the drift of a pipeline's live data and start retraining on it (see the module doc).

    :param pipeline: the pipeline's name (storage folders derive from it).
    :param lifecycle_dag_id: the DAG the asset event starts; a run of it already queued or running
        means no new event.
    :param registered_model: the MLflow registered model whose champion is watched.
    :param champion_alias: its alias.
    :param storage_root: the pipeline's storage root (inference log, monitor state, reports).
    :param storage_conn_id: a `rayops_s3` connection for `s3://` storage (None: the environment's).
    :param mlflow_conn_id: a `rayops_mlflow` connection (None: the embedded store).
    :param current: the live data URI; None: the champion's rows in the endpoint's inference log.
    :param reference: the reference data URI; None: the champion's training split.
    :param drift: `compute_drift` options: min_rows, method, threshold, columns ({name: {method,
        threshold}}), exclude, drift_share, correction, memory_mb.
    :param retrain_on_prediction_drift: prediction drift alone starts retraining.
    :param new_rows: the champion having served this many rows starts retraining.
    :param cooldown_s: least seconds between two retrainings the monitor starts.

    Returns (XCom) the summary the asset event carries: `{pipeline, reasons, champion_version,
    report_uri, report_html_uri, report_url, dataset_drift, drift_share, drifted_columns,
    prediction_drift, current_rows, checked_at}`.
    """

    template_fields: Sequence[str] = ()  # config is data: nothing here is ever rendered
    operator_extra_links = (DriftReportLink(),)
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        pipeline: str,
        lifecycle_dag_id: str,
        registered_model: str,
        storage_root: str,
        champion_alias: str = "champion",
        storage_conn_id: str | None = None,
        mlflow_conn_id: str | None = None,
        current: str | None = None,
        reference: str | None = None,
        drift: Mapping[str, Any] | None = None,
        retrain_on_prediction_drift: bool = False,
        new_rows: int | None = None,
        cooldown_s: float = 6 * 3600,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("mode", "reschedule")
        kwargs.setdefault("soft_fail", True)  # waited out without enough rows: skipped, not failed
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.lifecycle_dag_id = lifecycle_dag_id
        self.registered_model = registered_model
        self.champion_alias = champion_alias
        self.storage_root = storage_root.rstrip("/")
        self.storage_conn_id = storage_conn_id
        self.mlflow_conn_id = mlflow_conn_id
        self.current = current
        self.reference = reference
        self.drift = dict(drift or {})
        self.retrain_on_prediction_drift = retrain_on_prediction_drift
        self.new_rows = new_rows
        self.cooldown_s = cooldown_s

    def poke(self, context: Context) -> bool | PokeReturnValue:
        from airflow_provider_rayops.drift.check import MonitorState, after, count_rows, live_files
        from airflow_provider_rayops.registry.champion import find_champion

        settings = S3StorageHook(self.storage_conn_id).get_settings() if self.storage_conn_id else None
        hook = MlflowHook(self.mlflow_conn_id)
        client = hook.get_conn()
        champion, absent = find_champion(client, self.registered_model, self.champion_alias)
        if champion is None:
            self.log.info("waiting: %s (nothing serves to watch)", absent)
            return False
        version = str(champion.version)
        state = MonitorState.load(self.storage_root, self.pipeline, settings=settings)
        if state.version != version:  # a new champion: its own rows, from the start
            state = MonitorState(
                version=version,
                last_retrain_at=state.last_retrain_at,
                last_retrain_reasons=state.last_retrain_reasons,
            )
        live = self.current or log_uri(self.storage_root, self.pipeline)
        files = live_files(live, version=None if self.current else version, settings=settings)
        new = after(files, state.watermark)
        rows = count_rows(new, settings=settings)
        reasons = []
        if self.new_rows is not None:
            served = count_rows(files, settings=settings) if self.current is None else rows
            if served >= self.new_rows:
                reasons.append("volume")
        min_rows = int(self.drift.get("min_rows", 1))
        if rows < min_rows and not reasons:
            self.log.info("waiting: %d new row(s) in %s since the last check, min_rows is %d", rows, live, min_rows)
            return False
        now = dt.datetime.now(dt.UTC)
        result = self._judge(champion, client, [f.uri for f in new], settings) if rows >= min_rows else None
        summary: dict[str, Any] = {
            "pipeline": self.pipeline,
            "champion_version": version,
            "current_rows": rows,
            "checked_at": now.isoformat(timespec="seconds"),
        }
        if result is not None:
            summary.update(self._report(context, hook, champion, result, now, settings))
            if result.problems:
                for problem in result.problems:
                    self.log.warning("cannot judge: %s", problem)
                self.log.info("waiting: the input has %d problem(s); report %s", len(result.problems), summary["report_html_uri"])
                state.last_check_at, state.last_report_uri = summary["checked_at"], summary["report_uri"]
                state.save(self.storage_root, self.pipeline, settings=settings)
                return False
            if result.dataset_drift:
                reasons.append("data_drift")
            if result.prediction_drift and self.retrain_on_prediction_drift:
                reasons.append("prediction_drift")
            state.last_check_at, state.last_report_uri = summary["checked_at"], summary["report_uri"]
        if new:
            state.watermark = new[-1].mark
        summary["reasons"] = reasons
        if not reasons:
            state.save(self.storage_root, self.pipeline, settings=settings)
            raise AirflowSkipException(f"nothing to retrain for: {self._verdict(result)}")
        why_not = state.cooling_down(now, self.cooldown_s) or self._under_way(context)
        if why_not:
            state.save(self.storage_root, self.pipeline, settings=settings)
            raise AirflowSkipException(f"{', '.join(reasons)} ({self._verdict(result)}), but {why_not}: no retraining now")
        state.last_retrain_at, state.last_retrain_reasons = summary["checked_at"], reasons
        state.save(self.storage_root, self.pipeline, settings=settings)
        for asset in self.outlets:
            context["outlet_events"][asset].extra = summary
        self.log.info("retraining %s: %s (%s)", self.lifecycle_dag_id, ", ".join(reasons), self._verdict(result))
        return PokeReturnValue(is_done=True, xcom_value=summary)

    def _judge(self, champion: Any, client: Any, files: list[str], settings: S3Settings | None) -> DriftResult:
        from airflow_provider_rayops.drift import ColumnRule, DriftOptions, compute_drift
        from airflow_provider_rayops.storage import join_uri, read_manifest

        run = client.get_run(champion.run_id) if champion.run_id else None
        run_tags = run.data.tags if run is not None else {}
        tags = {**run_tags, **(champion.tags or {})}
        reference = self.reference
        exclude = list(self.drift.get("exclude") or ())
        if reference is None:
            snapshot = tags.get(names.SNAPSHOT_URI)
            if not snapshot:
                raise ValueError(
                    f"{self.registered_model} v{champion.version} has no {names.SNAPSHOT_URI} tag to find its "
                    "training data by; set monitor.reference"
                )
            reference = join_uri(snapshot, "train.parquet")
            manifest = read_manifest(snapshot, settings=settings) or {}
            if manifest.get("target"):  # what the model predicts is not among what it is asked
                exclude.append(str(manifest["target"]))
        predictions = tags.get(names.EVAL_PREDICTIONS_URI) if self.reference is None else None
        columns = {name: ColumnRule(**rule) for name, rule in (self.drift.get("columns") or {}).items()}
        options = DriftOptions(
            method=self.drift.get("method"),
            threshold=self.drift.get("threshold"),
            columns=columns,
            drift_share=float(self.drift.get("drift_share", 0.5)),
            correction=self.drift.get("correction", "none"),
            min_rows=int(self.drift.get("min_rows", 1)),
            exclude=exclude,
            memory_mb=int(self.drift.get("memory_mb", 1024)),
        )
        self.log.info("judging %d file(s) against %s", len(files), reference)
        return compute_drift(reference, files, options, prediction_reference=predictions, settings=settings)

    def _report(
        self,
        context: Context,
        hook: MlflowHook,
        champion: Any,
        result: DriftResult,
        now: dt.datetime,
        settings: S3Settings | None,
    ) -> dict[str, Any]:
        """Write the report to storage and the champion's run; the summary's report fields."""
        from airflow_provider_rayops.drift.check import check_id, monitor_uri, write_report
        from airflow_provider_rayops.drift.report import render_html
        from airflow_provider_rayops.registry import version_tags

        check = check_id(now, str(champion.version))
        details = {
            "pipeline": self.pipeline,
            "model": f"{self.registered_model} v{champion.version} ({self.champion_alias})",
            "checked at": now.isoformat(timespec="seconds"),
            "Airflow task": f"{context['ti'].dag_id}/{context['ti'].run_id}/{context['ti'].task_id}",
        }
        title = f"{self.pipeline}: drift check {check}"
        json_uri, html_uri = write_report(
            result,
            f"{monitor_uri(self.storage_root, self.pipeline)}/checks/{check}",
            title=title,
            details=details,
            settings=settings,
        )
        client = hook.get_conn()
        url = ""
        if champion.run_id:
            body = {**result.to_json(), "check": details}
            try:
                hook.log_artifact(
                    champion.run_id,
                    f"{REPORT_ARTIFACT_FOLDER}/{check}/drift.json",
                    json.dumps(body, indent=2).encode(),
                    settings=settings,
                )
                hook.log_artifact(
                    champion.run_id,
                    f"{REPORT_ARTIFACT_FOLDER}/{check}/drift.html",
                    render_html(result, title=title, details=details).encode(),
                    settings=settings,
                )
                link = report_link_value(
                    hook.tracking_uri(), client, champion.run_id, f"{REPORT_ARTIFACT_FOLDER}/{check}/drift.html"
                )
                url = link["url"]
                context["ti"].xcom_push(key=XCOM_KEY, value=link)
            except Exception as exc:  # the report is in storage either way; MLflow's copy is a convenience
                self.log.warning("could not log the report to run %s: %s: %s", champion.run_id, type(exc).__name__, exc)
        version_tags.set_version_tags(
            client,
            self.registered_model,
            champion.version,
            {
                names.DRIFT_CHECKED_AT: details["checked at"],
                names.DRIFT_VERDICT: self._verdict(result),
                names.DRIFT_REPORT_URI: html_uri,
            },
        )
        self.log.info("drift report: %s", html_uri)
        return {
            "report_uri": json_uri,
            "report_html_uri": html_uri,
            "report_url": url,
            "dataset_drift": result.dataset_drift,
            "drift_share": result.drift_share,
            "drifted_columns": result.drifted_columns,
            "prediction_drift": result.prediction_drift,
            "problems": [str(p) for p in result.problems],
        }

    @staticmethod
    def _verdict(result: DriftResult | None) -> str:
        if result is None:
            return "drift not judged"
        if result.problems:
            return f"no verdict: {len(result.problems)} problem(s)"
        drifted = f"{len(result.drifted_columns)} of {len(result.columns)} columns drifted"
        prediction = "" if result.prediction_drift is None else f", prediction drift {'yes' if result.prediction_drift else 'no'}"
        return f"{'dataset drift' if result.dataset_drift else 'no dataset drift'}: {drifted}{prediction}"

    def _under_way(self, context: Context) -> str | None:
        active = context["ti"].get_dr_count(dag_id=self.lifecycle_dag_id, states=_ACTIVE_RUN_STATES)
        return f"{active} run(s) of {self.lifecycle_dag_id} already queued or running" if active else None
