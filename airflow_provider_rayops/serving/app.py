"""What runs in Ray Serve for a pipeline: one application per registered version it serves, and
a router application in front of them (serving/config.py builds the config that names them).

    applications:
      - name: churn                      # the router: the pipeline's endpoint
        route_prefix: /churn
        import_path: airflow_provider_rayops.serving.app:build_router
        args: {pipeline: churn, max_body_bytes: 1048576, max_rows: 10000}
        deployments:
          - name: Router
            user_config:
              versions: {"3": churn--v3, "4": churn--v4}   # version -> its application
              champion: "3"                                # default: the first version listed
              weights: {"3": 90, "4": 10}                  # without weights: all to the champion
              sticky_header: X-Request-Key
      - name: churn--v3                  # a version: no route of its own, reached through the router
        route_prefix: null
        import_path: airflow_provider_rayops.serving.app:build_version
        args: {registered_model: churn, version: "3", batch: {max_batch_size: 32, wait_ms: 5},
               replicas: {min: 1, max: 2, num_cpus: 1}}

A version is an application of its own so that adding a canary or dropping the old version
never touches the others: Serve redeploys an application whose args change, all of it. Which
versions the router sends to, and by what weights, lives in its `user_config`: changing it is a
config update that touches only user_config, so no replica restarts (Serve calls
`Router.reconfigure`, which takes handles to the named applications).

Routes under the router's prefix:
- `POST /` (or `/invocations`, as `mlflow models serve`): a body in MLflow's scoring format
  (serving/payload.py), answered `{"predictions": [{"prediction": ..., "probability_<class>": ...}],
  "version": "3"}`; a bad body is a 4xx with `{"error": reason}` and never reaches a model.
- `GET /-/healthz`: 200 with the weights and each version's state while every version with
  weight answers; 503 otherwise (a weight-0 version may still be loading).
- `GET /-/stats?window_s=60`: per version, the requests, errors, error rate and p50/p99 latency
  of the last `window_s` seconds (serving/stats.py): what the deploy operator judges a canary by.
  One router replica sees all traffic (the router is one replica: it only parses and awaits).

A request the picked version fails (an error in the model, a version not ready or removed in
flight, or a body the champion takes but a canary refuses) counts as that version's error and,
when that version is not the champion, is answered by the champion: a bad canary shows in its
error rate and rolls back, and no client sees its failures.

Each request goes to a version drawn by weight, or, when the request carries the sticky header,
to the version its key hashes to (the same key stays on the same version while weights hold).
Per version, Ray's metrics get `rayops_serve_requests`, `rayops_serve_errors` and the latency
histogram `rayops_serve_latency_ms`, tagged with pipeline and version.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ray import serve

from airflow_provider_rayops.serving.config import HEALTH_PATH, ROUTER, STATS_PATH, VERSION_DEPLOYMENT
from airflow_provider_rayops.serving.inference_log import InferenceLog
from airflow_provider_rayops.serving.payload import BadPayload, Column, columns_of_signature, parse_rows
from airflow_provider_rayops.serving.stats import VersionStats

DEFAULT_BATCH = {"max_batch_size": 32, "wait_ms": 5}
DEFAULT_MAX_BODY_BYTES = 1 << 20
DEFAULT_MAX_ROWS = 10_000
DEFAULT_STATS_WINDOW_S = 60.0
INFERENCE_LOG_POLL_S = 0.5
PREDICT_PATHS = ("", "/", "/invocations")
# How long the router waits for a version to say what it takes before answering 503.
VERSION_TIMEOUT_S = 5.0
# Latency histogram buckets, in milliseconds.
LATENCY_BUCKETS_MS = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0]


logger = logging.getLogger(__name__)


@serve.deployment(max_ongoing_requests=64)
class ModelVersion:
    """One registered version: loads `models:/<registered_model>/<version>` and predicts batches."""

    def __init__(
        self, registered_model: str, version: str, batch: Mapping[str, Any], inference_log: Mapping[str, Any] | None = None
    ) -> None:
        import tempfile
        from pathlib import Path

        from mlflow.models import Model

        from airflow_provider_rayops.jobs import tracking
        from airflow_provider_rayops.jobs.modeling import load_predictor

        uri = f"models:/{registered_model}/{version}"
        # One download: the signature and the predictor both come from the local copy.
        with tempfile.TemporaryDirectory(prefix="rayops-serve-model-") as tmp:
            folder = tracking.download_artifacts(uri, tmp)
            signature = Model.load(str(Path(folder) / "MLmodel")).signature
            if signature is None:
                raise ValueError(f"{uri} has no signature: was it logged by the rayops train job?")
            self.columns = columns_of_signature(json.loads(signature.to_dict()["inputs"]))
            self.predictor = load_predictor(str(folder))
        self.predictor.source = uri
        self.version = version
        # serve.batch's wrapper has these setters; its type hints show the plain coroutine function.
        batched: Any = self.predict_batch
        batched.set_max_batch_size(int(batch.get("max_batch_size", DEFAULT_BATCH["max_batch_size"])))
        batched.set_batch_wait_timeout_s(float(batch.get("wait_ms", DEFAULT_BATCH["wait_ms"])) / 1000)
        self.inference_log = (
            InferenceLog(str(inference_log["uri"]), version=version, sample=float(inference_log.get("sample", 1.0)))
            if inference_log and inference_log.get("uri") and float(inference_log.get("sample", 1.0)) > 0
            else None
        )
        self._flusher: asyncio.Task | None = None

    def signature(self) -> list[dict[str, str]]:
        return [{"name": c.name, "type": c.type} for c in self.columns]

    @serve.batch(max_batch_size=DEFAULT_BATCH["max_batch_size"], batch_wait_timeout_s=DEFAULT_BATCH["wait_ms"] / 1000)
    async def predict_batch(self, tables: list[Any]) -> list[list[dict[str, Any]]]:
        """Predictions for several requests' rows in one model call, handed back per request."""
        # The model runs in a thread: on the replica's event loop it would hold up the requests
        # that arrive meanwhile (they could not even join the next batch).
        loop = asyncio.get_running_loop()
        rows, records = await loop.run_in_executor(None, self._records, tables)
        if self.inference_log is not None:
            # Kept after the answers go out, in a thread: the log is never on a response's way.
            loop.run_in_executor(None, self._log, rows, records)
            if self._flusher is None or self._flusher.done():
                self._flusher = loop.create_task(self._write_inference_log())
        out, at = [], 0
        for table in tables:
            out.append(records[at : at + table.num_rows])
            at += table.num_rows
        return out

    def _records(self, tables: list[Any]) -> tuple[Any, list[dict[str, Any]]]:
        import pyarrow as pa

        from airflow_provider_rayops.jobs.modeling.mlflow_model import predictions_frame

        rows = pa.concat_tables(tables)
        return rows, json.loads(predictions_frame(self.predictor, rows).to_json(orient="records"))

    def _log(self, rows: Any, records: list[dict[str, Any]]) -> None:
        assert self.inference_log is not None
        try:
            self.inference_log.add(rows, records)
        except Exception:  # best effort: the answers went out already
            logger.exception("inference log: could not keep a batch of %d row(s)", rows.num_rows)

    async def _write_inference_log(self) -> None:
        """Writes a part whenever the log is due, in a thread: never on a request's way."""
        assert self.inference_log is not None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(INFERENCE_LOG_POLL_S)
            if self.inference_log.due():
                await loop.run_in_executor(None, self.inference_log.flush)

    def __del__(self) -> None:
        # Serve is stopping this replica: what is buffered goes out now (best effort).
        log = getattr(self, "inference_log", None)
        if log is not None:
            log.flush()

    async def predict(self, table: Any) -> list[dict[str, Any]]:
        return await self.predict_batch(table)


def checked_weights(weights: Mapping[str, Any], versions: Sequence[str]) -> dict[str, float]:
    """`weights` as floats when they can route traffic: finite, non-negative, over known versions,
    not all zero; else ValueError saying which rule failed (the deploy operator checks the same
    before it sends a config)."""
    out = {str(k): float(v) for k, v in weights.items()}
    unknown = sorted(set(out) - set(versions))
    if unknown:
        raise ValueError(f"weights name version(s) {unknown} the app does not serve ({sorted(versions)})")
    if not all(math.isfinite(w) and w >= 0 for w in out.values()) or sum(out.values()) <= 0:
        raise ValueError(f"weights {out} must be finite, non-negative and not all zero")
    return out


def pick_version(weights: Mapping[str, float], key: str | None) -> str:
    """The version for a request: by its key's hash when it has one (the same key stays on the same
    version while the weights hold), else at random; either way in proportion to the weights."""
    versions = [v for v in sorted(weights) if weights[v] > 0]
    total = sum(weights[v] for v in versions)
    # The key's hash, or a random draw (traffic splitting, not security), as a fraction of the total.
    share = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64 if key else random.random()
    point = share * total
    for version in versions:
        point -= weights[version]
        if point < 0:
            return version
    return versions[-1]


@serve.deployment(max_ongoing_requests=256)
class Router:
    """The ingress: validates each request against the picked version's signature, answers with it."""

    def __init__(self, pipeline: str, limits: Mapping[str, int]) -> None:
        from ray.serve import metrics

        self.pipeline = pipeline
        self.handles: dict[str, Any] = {}
        self.max_body_bytes = int(limits.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES))
        self.max_rows = int(limits.get("max_rows", DEFAULT_MAX_ROWS))
        self.weights: dict[str, float] = {}
        self.champion = ""
        self.sticky_header = ""
        self.stats = VersionStats()
        self._apps: dict[str, str] = {}
        self._columns: dict[str, list[Column]] = {}
        # Ray hints tag_keys as Tuple[str] (one key); it takes any number.
        tags: Any = ("pipeline", "version")
        self.requests = metrics.Counter("rayops_serve_requests", description="Requests answered, per version", tag_keys=tags)
        self.errors = metrics.Counter("rayops_serve_errors", description="Requests that failed in the model", tag_keys=tags)
        self.latency = metrics.Histogram(
            "rayops_serve_latency_ms", description="Request latency (ms)", boundaries=LATENCY_BUCKETS_MS, tag_keys=tags
        )

    async def reconfigure(self, config: Mapping[str, Any]) -> None:
        # async: Serve runs it on the replica's event loop, between requests, never beside one.
        apps = {str(v): str(app) for v, app in (config.get("versions") or {}).items()}
        if not apps:
            raise ValueError("the router's user_config names no versions (versions: {version: application})")
        champion = str(config.get("champion") or next(iter(apps)))
        if champion not in apps:
            raise ValueError(f"the router's champion {champion!r} is not one of its versions {sorted(apps)}")
        # Until weights say otherwise, everything goes to the champion: never an equal split that
        # sends traffic to an untried version.
        weights = checked_weights(config.get("weights") or {champion: 1.0}, list(apps))
        # Handles are taken when first used: a version's application may be deployed by the same
        # config update, after this runs (until then it is "not ready", and has no weight yet).
        self.handles = {v: h for v, h in self.handles.items() if self._apps.get(v) == apps.get(v)}
        self._columns = {v: c for v, c in self._columns.items() if v in self.handles}
        self._apps, self.weights, self.champion = apps, weights, champion
        self.sticky_header = str(config.get("sticky_header") or "").lower()
        self.stats.forget(apps)

    def _handle(self, version: str) -> Any:
        if version not in self.handles:
            # No existence check: that is a blocking call to the controller on this replica's event loop.
            self.handles[version] = serve.get_deployment_handle(VERSION_DEPLOYMENT, self._apps[version], _check_exists=False)
        return self.handles[version]

    async def _signature(self, version: str) -> list[Column]:
        """The columns `version` takes (versions may differ: a retrained model can read a column as
        `double` once its snapshot had nulls), asked of it once."""
        if version not in self._columns:
            answer = await asyncio.wait_for(self._handle(version).signature.remote(), timeout=VERSION_TIMEOUT_S)
            self._columns[version] = [Column(**c) for c in answer]
        return self._columns[version]

    async def _health(self) -> tuple[int, dict[str, Any]]:
        async def state(version: str) -> str:
            try:
                await self._signature(version)
                return "ready"
            except Exception as exc:  # loading, or failed to load
                return f"not ready ({type(exc).__name__})"

        states = dict(zip(self._apps, await asyncio.gather(*(state(v) for v in self._apps)), strict=True))
        # Healthy when every version that gets traffic answers; a weight-0 version may still load.
        ok = all(states[v] == "ready" for v, w in self.weights.items() if w > 0)
        body = {
            "status": "ok" if ok else "unavailable",
            "pipeline": self.pipeline,
            "champion": self.champion,
            "weights": self.weights,
            "versions": states,
        }
        return (200 if ok else 503), body

    def _stats(self, query: Mapping[str, str]) -> tuple[int, dict[str, Any]]:
        try:
            window_s = float(query.get("window_s", DEFAULT_STATS_WINDOW_S))
            if not (math.isfinite(window_s) and window_s > 0):
                raise ValueError
        except ValueError:
            return 400, {"error": f"window_s must be a positive number of seconds, found {query.get('window_s')!r}"}
        body = {
            "pipeline": self.pipeline,
            "champion": self.champion,
            "weights": self.weights,
            "window_s": window_s,
            "versions": self.stats.summary(window_s),
        }
        return 200, body

    async def _try(self, version: str, body: bytes, content_type: str | None) -> tuple[str, Any]:
        """("ok", predictions) from `version`; ("bad", BadPayload) for a body it cannot take;
        ("failed", reason) when it is not ready or fails. Model calls are counted and timed."""
        try:
            columns = await self._signature(version)
        except Exception as exc:
            self.stats.record(version, latency_ms=None, failed=True)
            return "failed", f"version {version} is not ready ({type(exc).__name__})"
        try:
            # JSON and Arrow work in a thread: the router's one event loop carries every request.
            table = await asyncio.to_thread(
                parse_rows,
                body,
                content_type=content_type,
                columns=columns,
                max_bytes=self.max_body_bytes,
                max_rows=self.max_rows,
            )
        except BadPayload as exc:
            return "bad", exc
        tags = {"pipeline": self.pipeline, "version": version}
        started = time.perf_counter()
        failed = True
        try:
            predictions = await self._handle(version).predict.remote(table)
            failed = False
            return "ok", predictions
        except Exception as exc:
            self.errors.inc(tags=tags)
            return "failed", f"version {version} failed: {type(exc).__name__}"
        finally:
            latency_ms = (time.perf_counter() - started) * 1000
            self.requests.inc(tags=tags)
            self.latency.observe(latency_ms, tags=tags)
            self.stats.record(version, latency_ms=latency_ms, failed=failed)

    async def __call__(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        path = request.url.path
        prefix = request.scope.get("root_path", "")
        if prefix and path.startswith(prefix):
            path = path[len(prefix) :]
        if request.method == "GET" and path == HEALTH_PATH:
            status, health = await self._health()
            return JSONResponse(health, status_code=status)
        if request.method == "GET" and path == STATS_PATH:
            status, stats = self._stats(request.query_params)
            return JSONResponse(stats, status_code=status)
        if path not in PREDICT_PATHS:
            return JSONResponse(
                {"error": f"no route {path!r}: POST / or /invocations, GET {HEALTH_PATH} or {STATS_PATH}"}, status_code=404
            )
        if request.method != "POST":
            return JSONResponse({"error": "predictions are POST requests"}, status_code=405)
        # One snapshot per request: a reconfigure cannot change it halfway.
        weights, champion = self.weights, self.champion
        if not weights:
            return JSONResponse({"error": "no version is configured yet"}, status_code=503, headers={"Retry-After": "1"})
        version = pick_version(weights, request.headers.get(self.sticky_header) if self.sticky_header else None)
        body, content_type = await request.body(), request.headers.get("content-type")
        outcome, value = await self._try(version, body, content_type)
        if outcome == "failed" and version == champion and self.champion != champion:
            # The champion changed while this request was in flight (its version may be gone): ask the new one.
            champion = self.champion
        if outcome != "ok" and version != champion:
            # The champion answers what a canary could not. A body the champion refuses too is
            # the client's mistake, not the canary's.
            fallback, answer = await self._try(champion, body, content_type)
            if fallback == "ok":
                if outcome == "bad":  # a body clients send, which this version refuses: its error
                    self.stats.record(version, latency_ms=None, failed=True)
                    self.errors.inc(tags={"pipeline": self.pipeline, "version": version})
                return JSONResponse({"predictions": answer, "version": champion})
            if fallback == "bad" or outcome == "failed":
                outcome, value, version = fallback, answer, champion
        if outcome == "ok":
            return JSONResponse({"predictions": value, "version": version})
        if outcome == "bad":
            return JSONResponse({"error": value.reason}, status_code=value.status)
        status = 503 if "not ready" in value else 500
        headers = {"Retry-After": "1"} if status == 503 else None
        return JSONResponse({"error": value, "version": version}, status_code=status, headers=headers)


def build_version(args: Mapping[str, Any]) -> Any:
    """A version's application: `models:/<registered_model>/<version>` behind one autoscaled deployment."""
    if not args.get("registered_model") or not args.get("version"):
        raise ValueError("a rayops version application needs args.registered_model and args.version")
    batch = dict(DEFAULT_BATCH, **(args.get("batch") or {}))
    replicas = args.get("replicas") or {}
    low, high = int(replicas.get("min", 1)), int(replicas.get("max", replicas.get("min", 1)))
    deployment = _deployment(ModelVersion).options(
        name=VERSION_DEPLOYMENT,
        autoscaling_config={
            "min_replicas": low,
            "max_replicas": high,
            "target_ongoing_requests": 8,
            "upscale_delay_s": float(replicas.get("upscale_delay_s", 30.0)),
            "look_back_period_s": float(replicas.get("look_back_period_s", 30.0)),
        },
        ray_actor_options={"num_cpus": float(replicas.get("num_cpus", 1))},
    )
    return deployment.bind(str(args["registered_model"]), str(args["version"]), batch, args.get("inference_log"))


def build_router(args: Mapping[str, Any]) -> Any:
    """The pipeline's router application; the versions it routes to come with its user_config."""
    if not args.get("pipeline"):
        raise ValueError("the rayops router application needs args.pipeline")
    limits = {k: int(args[k]) for k in ("max_body_bytes", "max_rows") if k in args}
    # The router only parses JSON and awaits the versions: it reserves no CPU of its own, as Serve's proxy.
    router = _deployment(Router).options(name=ROUTER, ray_actor_options={"num_cpus": 0})
    return router.bind(str(args["pipeline"]), limits)


def _deployment(cls: Any) -> Any:
    """A class made a Serve Deployment by @serve.deployment (its type hints still show the class)."""
    return cls
