"""User training loops for the train job tests: the built-in loop with a fault injected once.

They are "user" loops in every sense the train job knows: imported by path
(`tests.jobs.train_loops:<name>`), shipped to Ray through the job's PYTHONPATH, given the
standard loop config. Each takes its fault settings from params and hands the built-in loop
the rest:

    fault_epoch   the epoch whose report the fault replaces
    fault_rank    the worker that faults (default 0)
    fault_marker  a file that arms the fault; the faulting worker deletes it first, so the
                  fault happens once per test however often Ray restarts the worker
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

# Ray Train's controller collects reports every 2 s (RAY_TRAIN_HEALTH_CHECK_INTERVAL_S);
# waiting longer before the fault makes sure the previous epoch's checkpoint is registered.
_SETTLE_S = 5.0


def _with_fault(config: dict[str, Any], fault) -> dict[str, Any]:
    import ray.train

    from airflow_provider_rayops.jobs import builtin

    params = dict(config["params"])
    epoch = int(params.pop("fault_epoch"))
    rank = int(params.pop("fault_rank", 0))
    marker = Path(params.pop("fault_marker"))
    real_report = ray.train.report

    def report(metrics, *args, **kwargs):
        armed = metrics.get("epoch") == epoch and ray.train.get_context().get_world_rank() == rank
        if armed and marker.exists():
            marker.unlink()
            time.sleep(_SETTLE_S)
            fault()
        return real_report(metrics, *args, **kwargs)

    ray.train.report = report
    try:
        return builtin.tabular_mlp({**config, "params": params})
    finally:
        ray.train.report = real_report


def tabular_mlp_killed_once(config: dict[str, Any]) -> dict[str, Any]:
    """The worker process dies (SIGKILL) instead of reporting `fault_epoch`."""
    return _with_fault(config, lambda: os.kill(os.getpid(), signal.SIGKILL))


def tabular_mlp_fails_once(config: dict[str, Any]) -> dict[str, Any]:
    """The loop raises instead of reporting `fault_epoch` (with max_failures=0 the job fails)."""

    def fail() -> None:
        raise RuntimeError("injected training failure")

    return _with_fault(config, fail)


NOT_A_FUNCTION = 42
