"""Per-epoch metrics sent to the training run's MLflow run while training runs.

A person watching the MLflow UI sees the curves grow epoch by epoch instead of all at once when
the job ends. Rank 0's `LoopContext.report` hands each epoch's metrics to `LiveMetrics.send` once
Ray Train has the report; `send` only puts them on a queue, and a background thread logs them, so
an epoch never waits for MLflow. Logging is best effort: a tracking server that cannot be reached
costs a warning, never the training. The train job logs the whole history again when the run
ends, skipping each (metric, epoch, value) the run already has, so nothing is lost.

After a resume, an epoch trained again is logged again with its new value (the old one stays in
the metric's history: that attempt did measure it); the value at each step that MLflow shows
last is the checkpoint's. A value logged by this thread while the job's final logging reads the
run (a loop that ends without `summary()`, or a flush slower than FLUSH_TIMEOUT_S) may appear twice.

The loop config carries `mlflow: {"run_id"}`; the tracking URI (and any credentials) comes from
the job's environment, as the driver's does. Only the train job sets it: a Tune trial's run is
made after the trial, so trials are logged when they end.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

CONFIG_KEY = "mlflow"
# How long the end of a loop waits for the last epochs to reach MLflow (the job logs the rest).
FLUSH_TIMEOUT_S = 10.0
_STOP = object()


class LiveMetrics:
    """A queue of epoch metrics and the thread that logs them to one MLflow run."""

    def __init__(self, *, run_id: str, tracking_uri: str) -> None:
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.logged = 0
        self.failed = False
        self._closed = threading.Event()  # set when the loop ends: what is still queued is left to the job
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="rayops-live-metrics", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LiveMetrics | None:
        """The logger the loop config asks for; None when it names no MLflow run."""
        target = config.get(CONFIG_KEY) or {}
        if not target.get("run_id"):
            return None
        from airflow_provider_rayops.jobs import tracking

        return cls(run_id=str(target["run_id"]), tracking_uri=tracking.tracking_uri())

    def send(self, epoch: int, metrics: Mapping[str, Any]) -> None:
        """Queue one epoch's numeric metrics (step = epoch); returns at once."""
        values = {
            k: float(v)
            for k, v in metrics.items()
            if k != "epoch" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
        }
        if values:
            self._queue.put((int(epoch), values, int(time.time() * 1000)))

    def close(self, timeout_s: float = FLUSH_TIMEOUT_S) -> None:
        """Log what is queued (waiting at most `timeout_s`; the rest is left to the job) and stop the thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout_s)
        self._closed.set()

    def _run(self) -> None:
        try:
            from mlflow import MlflowClient
            from mlflow.entities import Metric

            client = MlflowClient(tracking_uri=self.tracking_uri)
        except Exception as exc:  # an import or URI problem: training goes on, the job logs at the end
            self._give_up(exc)
            return
        seen: dict[str, set[tuple[int, float]]] = {}  # (step, value) the run has, per key: a resume re-reports
        while True:
            item = self._queue.get()
            if item is _STOP or self._closed.is_set():
                return
            if self.failed:
                continue
            epoch, values, timestamp = item
            try:
                for key in values.keys() - seen.keys():
                    seen[key] = {(m.step, m.value) for m in client.get_metric_history(self.run_id, key)}
                batch = [Metric(k, v, timestamp, epoch) for k, v in values.items() if (epoch, v) not in seen[k]]
                if batch:
                    client.log_batch(self.run_id, metrics=batch)
                    self.logged += len(batch)
                for key, value in values.items():
                    seen[key].add((epoch, value))
            except Exception as exc:  # the server is down or refuses: stop trying, the job logs at the end
                self._give_up(exc)

    def _give_up(self, exc: Exception) -> None:
        self.failed = True
        log.warning(
            "live metrics to MLflow run %s stopped (%s: %s); the train job logs every epoch when it ends",
            self.run_id,
            type(exc).__name__,
            str(exc).splitlines()[0] if str(exc) else "",
        )
