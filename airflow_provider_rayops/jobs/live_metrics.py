"""Per-epoch metrics sent to the training run's MLflow run while training runs.

A person watching the MLflow UI sees the curves grow epoch by epoch instead of all at once when
the job ends. Rank 0's `LoopContext.report` hands each epoch's metrics to `LiveMetrics.send`,
which only puts them on a queue: a background thread logs them, so an epoch never waits for
MLflow. Logging is best effort: a tracking server that cannot be reached costs a warning, never
the training (the train job logs the whole history again when the run ends, skipping the
(metric, epoch) pairs already there, so nothing is lost and nothing is logged twice).

The loop config carries `mlflow: {"run_id", "tracking_uri"}` (train job only; a Tune trial's run
is made after the trial, so trials are logged when they end).
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
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="rayops-live-metrics", daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LiveMetrics | None:
        """The logger the loop config asks for; None when it names no MLflow run."""
        target = config.get(CONFIG_KEY) or {}
        if not target.get("run_id") or not target.get("tracking_uri"):
            return None
        return cls(run_id=str(target["run_id"]), tracking_uri=str(target["tracking_uri"]))

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
        """Log what is queued (waiting at most `timeout_s`) and stop the thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout_s)

    def _run(self) -> None:
        try:
            from mlflow import MlflowClient
            from mlflow.entities import Metric

            client = MlflowClient(tracking_uri=self.tracking_uri)
        except Exception as exc:  # an import or URI problem: training goes on, the job logs at the end
            self._give_up(exc)
            return
        seen: dict[str, set[int]] = {}  # steps the run already has, per key (a resumed worker re-reports)
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self.failed:
                continue
            epoch, values, timestamp = item
            try:
                for key in values.keys() - seen.keys():
                    seen[key] = {m.step for m in client.get_metric_history(self.run_id, key)}
                batch = [Metric(k, v, timestamp, epoch) for k, v in values.items() if epoch not in seen[k]]
                if batch:
                    client.log_batch(self.run_id, metrics=batch)
                    self.logged += len(batch)
                for key in values:
                    seen[key].add(epoch)
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
