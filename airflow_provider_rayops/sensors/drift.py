"""DriftSensor: wait for new live rows, judge drift on them, and start retraining through an asset event.

Each poke (in `reschedule` mode by default: no worker slot is held between pokes):

1. The champion: `registered_model@champion_alias` in MLflow. None yet: keep waiting.
2. The new rows: files of the live data after the monitor's watermark (drift/check.py), counted
   from parquet footers. Fewer than `min_rows`: keep waiting (a check that waits longer than the
   sensor's `timeout` is skipped: `soft_fail`).
3. The check: `compute_drift(reference, new files)`: the reference is the champion's training
   split (its `rayops.snapshot_uri` lineage tag, its target left out) or `reference`; the model's
   outputs are judged against its predictions on the validation split (`rayops.eval.predictions_uri`).
   In this worker, or, when it needs more memory than `memory_mb`, as a Ray job on the pipeline's
   compute profile (`jobs/drift.py`), named after the rows it judges: the sensor releases its slot
   while the job runs and collects the result on a later poke.
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
`retrain_on_prediction_drift`), `performance` (the champion's metric on its served rows whose
labels arrived broke its bound: drift/performance.py), `volume` (the champion served `new_rows` rows).
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

    from airflow_provider_rayops.drift.check import LiveFile
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
    :param performance: `{labels, join_key, label, metric, min | max, min_rows}`: retrain when the
        champion's metric on its served rows that have labels breaks its bound.
    :param compute: the compute profile (a plain dict) a check larger than `memory_mb` runs on as a
        Ray job; None: the Ray cluster of `ray_conn_id`.
    :param runtime_env: the pipeline's runtime_env (pip, env_vars) for that job.

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
        performance: Mapping[str, Any] | None = None,
        compute: dict[str, Any] | None = None,
        ray_conn_id: str | None = None,
        runtime_env: dict[str, Any] | None = None,
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
        self.performance = dict(performance) if performance else None
        self.compute = compute
        self.ray_conn_id = ray_conn_id
        self.runtime_env = runtime_env

    def poke(self, context: Context) -> bool | PokeReturnValue:
        from airflow_provider_rayops.drift.check import LiveFile, MonitorState, count_rows, live_files
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
                version=version, last_retrain_at=state.last_retrain_at, last_retrain_reasons=state.last_retrain_reasons
            )
        now = dt.datetime.now(dt.UTC)
        live = self.current or log_uri(self.storage_root, self.pipeline)
        files = live_files(live, version=None if self.current else version, settings=settings)
        pending = state.pending_job
        if pending:  # a check running as a Ray job: the same rows, whatever arrived since
            new = [LiveFile(uri=uri, mtime_ns=int(mtime)) for mtime, uri in pending["files"]]
            rows = int(pending["rows"])
        else:
            new = state.unjudged(files)
            rows = count_rows(new, settings=settings)
        reasons = []
        if self.new_rows is not None and self._served_since_retrain(files, state, rows, settings) >= self.new_rows:
            reasons.append("volume")
        min_rows = int(self.drift.get("min_rows", 1))
        if rows < min_rows + state.problem_rows and not reasons:
            why = "more rows than those that could not be judged" if state.problem_rows else f"min_rows is {min_rows}"
            self.log.info("waiting: %d new row(s) in %s since the last check; %s", rows, live, why)
            return False
        summary: dict[str, Any] = {"pipeline": self.pipeline, "champion_version": version, "current_rows": rows}
        result = None
        if rows >= min_rows:
            judged = self._judge(context, champion, client, state, new, rows, now, settings)
            if judged is None:  # a Ray job judges the rows; a later poke collects its verdict
                state.save(self.storage_root, self.pipeline, settings=settings)
                return False
            state.pending_job = None
            summary["checked_at"] = judged["checked_at"]
            if "report_uri" in judged:
                summary.update(self._record(context, hook, champion, judged, settings))
                state.last_check_at, state.last_report_uri = summary["checked_at"], summary["report_uri"]
            result = judged["result"]
            if self.performance:
                quality = self._quality(files, settings)
                if quality is not None:
                    summary["performance"] = quality
                    if quality.get("breached"):
                        reasons.append("performance")
            if result["problems"]:
                for problem in result["problems"]:
                    self.log.warning("cannot judge: %s", problem)
                state.problem_rows = rows  # judged again once min_rows more rows arrive
                if not reasons:
                    self.log.info(
                        "waiting: the input has %d problem(s); report %s", len(result["problems"]), state.last_report_uri
                    )
                    state.save(self.storage_root, self.pipeline, settings=settings)
                    return False
            else:
                state.judged(new)
                if result["dataset_drift"]:
                    reasons.append("data_drift")
                if result["prediction_drift"] and self.retrain_on_prediction_drift:
                    reasons.append("prediction_drift")
        summary.setdefault("checked_at", now.isoformat(timespec="seconds"))
        summary["reasons"] = reasons
        if not reasons:
            state.save(self.storage_root, self.pipeline, settings=settings)
            raise AirflowSkipException(f"nothing to retrain for: {verdict(result)}")
        why_not = state.cooling_down(now, self.cooldown_s) or self._under_way(context)
        if why_not:
            state.save(self.storage_root, self.pipeline, settings=settings)
            raise AirflowSkipException(f"{', '.join(reasons)} ({verdict(result)}), but {why_not}: no retraining now")
        state.last_retrain_at, state.last_retrain_reasons = summary["checked_at"], reasons
        state.save(self.storage_root, self.pipeline, settings=settings)
        for asset in self.outlets:
            context["outlet_events"][asset].extra = summary
        self.log.info("retraining %s: %s (%s)", self.lifecycle_dag_id, ", ".join(reasons), verdict(result))
        return PokeReturnValue(is_done=True, xcom_value=summary)

    def _served_since_retrain(self, files: Sequence[LiveFile], state: Any, rows: int, settings: S3Settings | None) -> int:
        """Rows the champion served since the monitor last started a retraining (the volume trigger)."""
        from airflow_provider_rayops.drift.check import count_rows

        if self.current is not None:
            return rows
        since = dt.datetime.fromisoformat(state.last_retrain_at).timestamp() * 1e9 if state.last_retrain_at else 0
        return count_rows([f for f in files if f.mtime_ns > since], settings=settings)

    def _judge(
        self,
        context: Context,
        champion: Any,
        client: Any,
        state: Any,
        new: Sequence[LiveFile],
        rows: int,
        now: dt.datetime,
        settings: S3Settings | None,
    ) -> dict[str, Any] | None:
        """The check of `new` against the reference: in this worker, or (larger than `memory_mb`)
        as a Ray job, whose result a later poke collects (None until then). Returns
        `{result: DriftResult.to_json(), report_uri, report_html_uri, checked_at}`."""
        from airflow_provider_rayops.drift.check import check_id, monitor_uri

        reference, prediction_reference, exclude = self._reference(champion, client, settings)
        options = {**self.drift, "exclude": exclude}
        checked_at = now.isoformat(timespec="seconds")
        needed = _bytes_needed(reference, rows, settings=settings)
        if state.pending_job or needed > int(self.drift.get("memory_mb", 1024)) * 2**20:
            return self._judge_on_ray(context, champion, state, reference, prediction_reference, options, new, rows, needed)
        from airflow_provider_rayops.drift import DriftInputError, compute_drift
        from airflow_provider_rayops.drift.check import write_report
        from airflow_provider_rayops.drift.compute import drift_options

        check = check_id(now, str(champion.version))
        self.log.info("judging %d row(s) of %d file(s) here against %s", rows, len(new), reference)
        try:
            result = compute_drift(
                reference,
                [f.uri for f in new],
                drift_options(options),
                prediction_reference=prediction_reference,
                settings=settings,
            )
        except DriftInputError as exc:  # a file that cannot be read: the rows are not judged, and no report is written
            return {"result": {"problems": [str(exc)]}, "checked_at": checked_at}
        folder = f"{monitor_uri(self.storage_root, self.pipeline)}/checks/{check}"
        json_uri, html_uri = write_report(
            result, folder, title=self._title(check), details=self._details(context, champion, checked_at), settings=settings
        )
        return {"result": result.to_json(), "report_uri": json_uri, "report_html_uri": html_uri, "checked_at": checked_at}

    def _judge_on_ray(
        self,
        context: Context,
        champion: Any,
        state: Any,
        reference: str,
        prediction_reference: str | None,
        options: Mapping[str, Any],
        new: Sequence[LiveFile],
        rows: int,
        needed: int,
    ) -> dict[str, Any] | None:
        """Submit the check as a Ray job (on kuberay: a RayJob) and remember it (and the rows it
        judges) in the monitor's state, so every poke collects the same job; None while it runs,
        its result once it ended."""
        import hashlib

        from airflow_provider_rayops.backends import get_backend
        from airflow_provider_rayops.backends.kuberay import KubeRayBackend
        from airflow_provider_rayops.drift.check import check_id, monitor_uri
        from airflow_provider_rayops.hooks.ray_jobs_api import RayopsComputeError
        from airflow_provider_rayops.jobs import contracts
        from airflow_provider_rayops.operators.job_spec import job_runtime_env
        from airflow_provider_rayops.operators.ray_job import compute_profile

        marks = hashlib.sha256(json.dumps([f.mark for f in new]).encode()).hexdigest()[:12]
        sid = f"rayops-{self.pipeline}--monitor--v{champion.version}-{marks}"
        if state.pending_job:
            sid = state.pending_job["submission_id"]
        backend = get_backend(compute_profile(self.compute, self.ray_conn_id))
        metadata = {
            "rayops_pipeline": self.pipeline,
            "rayops_registered_model": self.registered_model,
            "rayops_version": str(champion.version),
            "rayops_run_id": context["ti"].run_id,
        }

        def job_env(**code: Any) -> dict[str, Any]:
            """The runtime env of a new check: its arguments, and the storage connection's settings."""
            now = dt.datetime.now(dt.UTC)
            check = check_id(now, str(champion.version))
            args = contracts.DriftArgs(
                reference=reference,
                current=[f.uri for f in new],
                prediction_reference=prediction_reference,
                options=dict(options),
                report_folder=f"{monitor_uri(self.storage_root, self.pipeline)}/checks/{check}",
                title=self._title(check),
                details=self._details(context, champion, now.isoformat(timespec="seconds")),
            ).model_dump(mode="json")
            return job_runtime_env(self.runtime_env, storage_conn_id=self.storage_conn_id, job_args=args, **code)

        if isinstance(backend, KubeRayBackend):
            outcome = self._drift_rayjob(backend, sid, metadata, job_env, needed)
        else:
            outcome = self._drift_ray_job(backend, sid, metadata, job_env, needed)
        if outcome is None:
            state.pending_job = state.pending_job or {"submission_id": sid, "files": [list(f.mark) for f in new], "rows": rows}
            return None
        state.pending_job = None
        checked_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        try:
            judged = contracts.DriftJobResult.model_validate(outcome.raise_for_status()).model_dump(mode="json")
        except RayopsComputeError as exc:  # an unreadable file or a lost node: these rows wait for more
            return {"result": {"problems": [f"Ray job {sid} failed: {str(exc).splitlines()[0]}"]}, "checked_at": checked_at}
        return {**judged, "checked_at": checked_at}

    def _drift_ray_job(self, backend: Any, sid: str, metadata: dict[str, str], job_env: Any, needed: int) -> Any:
        """The check's Ray job on a cluster with a dashboard: submitted if it is not there yet;
        its JobOutcome once it ended, else None."""
        from airflow_provider_rayops.backends.cluster_code import JobCode, prepare_job_code
        from airflow_provider_rayops.hooks.ray_jobs_api import RayJobsClient
        from airflow_provider_rayops.jobs import contracts
        from airflow_provider_rayops.triggers.job_outcome import JobOutcome

        endpoint = backend.endpoint()
        client = RayJobsClient(endpoint)
        info = client.get_job(sid)
        if info is None:
            code = prepare_job_code(client, backend.profile, JobCode(rayops=True), log=self.log.info)
            client.submit(
                submission_id=sid,
                entrypoint=contracts.DRIFT.entrypoint,
                runtime_env=job_env(py_modules=code.py_modules),
                entrypoint_num_cpus=1,
                metadata=metadata,
            )
            self.log.info(
                "the check needs about %d MiB, over memory_mb: judging it as Ray job %s (%s)",
                needed // 2**20, sid, endpoint.job_url(sid),
            )  # fmt: skip
            return None
        if not info.status.is_terminal():
            self.log.info("Ray job %s is %s", sid, info.status.value)
            return None
        return JobOutcome.of_job(info, client.get_logs(sid), dashboard_url=endpoint.dashboard_url)

    def _drift_rayjob(self, backend: Any, sid: str, metadata: dict[str, str], job_env: Any, needed: int) -> Any:
        """The same on kuberay: a RayJob with a cluster of its own (the profile's image runs the
        check, credentials come from its secret_env); its log and result are read from the
        cluster's dashboard once KubeRay says it ended, before the clean-up deletes the cluster."""
        from airflow_provider_rayops.backends.kuberay.manifests import LABEL_PIPELINE, RAYJOBS, RayJobRequest, ray_job
        from airflow_provider_rayops.backends.kuberay.status import RayJobState
        from airflow_provider_rayops.hooks.ray_jobs_api import RayJobsClient, RayopsComputeError
        from airflow_provider_rayops.jobs import contracts
        from airflow_provider_rayops.operators.job_spec import label_value, rayjob_name
        from airflow_provider_rayops.triggers.job_outcome import JobOutcome

        kube = backend.client()
        name = rayjob_name(sid)
        found = kube.get(RAYJOBS, name)
        if found is None:
            request = RayJobRequest(
                name=name,
                job_id=sid,
                entrypoint=contracts.DRIFT.entrypoint,
                runtime_env=job_env(credentials=False),
                metadata=metadata,
                labels={LABEL_PIPELINE: label_value(self.pipeline)},
                entrypoint_num_cpus=1,
            )
            kube.create(RAYJOBS, ray_job(backend.profile, request))
            self.log.info(
                "the check needs about %d MiB, over memory_mb: judging it as RayJob %s/%s",
                needed // 2**20, backend.profile.namespace, name,
            )  # fmt: skip
            return None
        job = RayJobState.of(found)
        if not job.terminal:
            self.log.info("RayJob %s is %s", name, job.deployment_status or "New")
            return None
        status, message = job.outcome()
        try:
            if not job.dashboard:
                raise RayopsComputeError("KubeRay reported no dashboard")
            log = RayJobsClient(backend.cluster_endpoint(job.dashboard)).get_logs(sid)
        except RayopsComputeError as exc:
            # The result travels in the log: without it (the cluster cleaned up, say) the rows are judged again.
            return JobOutcome.error(
                submission_id=sid,
                dashboard_url=job.dashboard or "",
                message=f"RayJob {name} ended {status}; its log could not be read: {exc}",
            )
        outcome = JobOutcome.of_job(job.job_info(), log, dashboard_url=job.dashboard or "")
        if status != "SUCCEEDED":
            return JobOutcome(submission_id=sid, status=status, dashboard_url=job.dashboard or "", message=message,
                              last_log_lines=outcome.last_log_lines)  # fmt: skip
        return outcome

    def _reference(self, champion: Any, client: Any, settings: S3Settings | None) -> tuple[str, str | None, list[str]]:
        """The reference data, the reference of the model's outputs, and the columns left out."""
        from airflow_provider_rayops.storage import join_uri, read_manifest

        run = client.get_run(champion.run_id) if champion.run_id else None
        tags = {**(run.data.tags if run is not None else {}), **(champion.tags or {})}
        exclude = list(self.drift.get("exclude") or ())
        if self.reference is not None:
            return self.reference, None, exclude
        snapshot = tags.get(names.SNAPSHOT_URI)
        if not snapshot:
            raise ValueError(
                f"{self.registered_model} v{champion.version} has no {names.SNAPSHOT_URI} tag to find its training data "
                "by; set monitor.reference"
            )
        manifest = read_manifest(snapshot, settings=settings) or {}
        if manifest.get("target"):  # what the model predicts is not among what it is asked
            exclude.append(str(manifest["target"]))
        return join_uri(snapshot, "train.parquet"), tags.get(names.EVAL_PREDICTIONS_URI), exclude

    def _title(self, check: str) -> str:
        return f"{self.pipeline}: drift check {check}"

    def _details(self, context: Context, champion: Any, checked_at: str) -> dict[str, str]:
        ti = context["ti"]
        return {
            "pipeline": self.pipeline,
            "model": f"{self.registered_model} v{champion.version} ({self.champion_alias})",
            "checked at": checked_at,
            "Airflow task": f"{ti.dag_id}/{ti.run_id}/{ti.task_id}",
        }

    def _record(
        self, context: Context, hook: MlflowHook, champion: Any, judged: Mapping[str, Any], settings: S3Settings | None
    ) -> dict[str, Any]:
        """The report on the champion's run (artifacts) and version (tags); the summary's report fields."""
        from airflow_provider_rayops import storage
        from airflow_provider_rayops.registry import version_tags

        result, json_uri, html_uri = judged["result"], judged["report_uri"], judged["report_html_uri"]
        check = json_uri.rstrip("/").rsplit("/", 2)[-2]
        client = hook.get_conn()
        url = ""
        if champion.run_id:
            try:
                for name, uri in (("drift.json", json_uri), ("drift.html", html_uri)):
                    data = storage.read_bytes(uri, settings=settings)
                    hook.log_artifact(champion.run_id, f"{REPORT_ARTIFACT_FOLDER}/{check}/{name}", data, settings=settings)
                link = report_link_value(
                    hook.tracking_uri(), client, champion.run_id, f"{REPORT_ARTIFACT_FOLDER}/{check}/drift.html"
                )
                url = link["url"]
                context["ti"].xcom_push(key=XCOM_KEY, value=link)
            except Exception as exc:  # the report is in storage either way; MLflow's copy is a convenience
                # The type only: an HTTP error's text carries the URL, which may hold the connection's credentials.
                self.log.warning("could not log the report to run %s (%s)", champion.run_id, type(exc).__name__)
        version_tags.set_version_tags(
            client,
            self.registered_model,
            champion.version,
            {
                names.DRIFT_CHECKED_AT: judged["checked_at"],
                names.DRIFT_VERDICT: verdict(result),
                names.DRIFT_REPORT_URI: html_uri,
            },
        )
        self.log.info("drift report: %s", html_uri)
        return {
            "report_uri": json_uri,
            "report_html_uri": html_uri,
            "report_url": url,
            "dataset_drift": result["dataset_drift"],
            "drift_share": result["drift_share"],
            "drifted_columns": result["drifted_columns"],
            "prediction_drift": result["prediction_drift"],
            "problems": result["problems"],
        }

    def _quality(self, files: Sequence[LiveFile], settings: S3Settings | None) -> dict[str, Any] | None:
        """The champion's metric on its served rows that have labels, and whether it broke its bound
        (None while the labels are missing or too few)."""
        from airflow_provider_rayops.drift import DriftInputError
        from airflow_provider_rayops.drift.performance import live_quality

        spec = dict(self.performance or {})
        try:
            quality = live_quality(
                [f.uri for f in files],
                spec["labels"],
                join_key=spec["join_key"],
                label=spec["label"],
                metric=spec["metric"],
                settings=settings,
            )
        except (DriftInputError, ValueError, TypeError) as exc:  # labels not there yet, or not joinable
            self.log.info("live quality not judged: %s", exc)
            return None
        out: dict[str, Any] = {**quality.to_json(), "min": spec.get("min"), "max": spec.get("max")}
        if quality.value is None or quality.rows < int(spec.get("min_rows", 1)):
            self.log.info(
                "live %s not judged: %d labelled row(s), min_rows is %s", quality.metric, quality.rows, spec.get("min_rows")
            )
            return out
        low, high = spec.get("min"), spec.get("max")
        out["breached"] = (low is not None and quality.value < low) or (high is not None and quality.value > high)
        self.log.info(
            "live %s of the champion on %d labelled row(s): %.4f (bound %s)",
            quality.metric, quality.rows, quality.value, f">= {low}" if low is not None else f"<= {high}",
        )  # fmt: skip
        return out

    def _under_way(self, context: Context) -> str | None:
        active = context["ti"].get_dr_count(dag_id=self.lifecycle_dag_id, states=_ACTIVE_RUN_STATES)
        return f"{active} run(s) of {self.lifecycle_dag_id} already queued or running" if active else None


def verdict(result: Mapping[str, Any] | None) -> str:
    """A check's verdict in a line (a DriftResult.to_json() dict)."""
    if result is None:
        return "drift not judged"
    if result["problems"]:
        return f"no verdict: {len(result['problems'])} problem(s)"
    drifted = f"{len(result['drifted_columns'])} of {len(result['columns'])} columns drifted"
    prediction = result["prediction_drift"]
    predicted = "" if prediction is None else f", prediction drift {'yes' if prediction else 'no'}"
    return f"{'dataset drift' if result['dataset_drift'] else 'no dataset drift'}: {drifted}{predicted}"


def _bytes_needed(reference: str, current_rows: int, *, settings: S3Settings | None) -> int:
    """About what judging takes in memory: the bytes compute_drift counts per row of each reference column, both sides."""
    import pyarrow.parquet as pq

    from airflow_provider_rayops import storage
    from airflow_provider_rayops.drift.compute import BYTES_PER_VALUE

    if not reference.lower().endswith((".parquet", ".pq")):
        return 0  # a folder or CSV reference: judged here, a group of columns at a time
    fs, path = storage.filesystem(reference, settings=settings)
    with fs.open_input_file(path) as handle:
        metadata = pq.ParquetFile(handle).metadata
    return BYTES_PER_VALUE * (metadata.num_rows + current_rows) * metadata.num_columns
