"""User training loops for the train job tests: the built-in loop with a fault injected once.

They are "user" loops in every sense the train job knows: imported by path
(`tests.jobs.train_loops:<name>`), shipped to Ray through the job's PYTHONPATH, given the
standard loop config. Each takes its fault settings from params and hands the built-in loop
the rest. A fault is named by a prefix (`kill`, `fail`):

    <prefix>_epoch   the epoch whose report the fault replaces
    <prefix>_rank    the worker that faults (default 0)
    <prefix>_marker  a file that arms the fault; the faulting worker deletes it first, so the
                     fault happens once per test however often Ray restarts the worker
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# How long the faulting worker waits for Ray Train to register the previous epoch's checkpoint.
_REGISTERED_WITHIN_S = 120.0


def _wait_until_registered(epoch: int) -> None:
    """Until Ray Train's controller has recorded `epoch`'s checkpoint in its checkpoint manager
    snapshot (it polls workers every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S): a fault before that
    would resume from an older checkpoint than the test expects. Waits on the file, not a clock."""
    import json

    import ray.train

    from airflow_provider_rayops.jobs.builtin import checkpoint_dir_name

    storage = ray.train.get_context().get_storage()
    wanted = checkpoint_dir_name(epoch)
    deadline = time.monotonic() + _REGISTERED_WITHIN_S
    while time.monotonic() < deadline:
        try:
            with storage.storage_filesystem.open_input_stream(storage.checkpoint_manager_snapshot_path) as f:
                if wanted in json.dumps(json.loads(f.read())):
                    return
        except (FileNotFoundError, OSError, ValueError):
            pass  # not written yet, or being replaced
        time.sleep(0.2)
    raise TimeoutError(f"Ray Train did not register {wanted} within {_REGISTERED_WITHIN_S:.0f}s")


def _armed(params: dict[str, Any], prefix: str, fault) -> Callable[[dict[str, Any]], None]:
    """A before-report hook calling `fault()` once, in place of the `<prefix>_epoch` report of
    worker `<prefix>_rank`; pops its settings from `params`."""
    import ray.train

    epoch = int(params.pop(f"{prefix}_epoch"))
    rank = int(params.pop(f"{prefix}_rank", 0))
    marker = Path(params.pop(f"{prefix}_marker"))
    # What the job gave Ray Train's processes (the controller polls workers at this interval).
    marker.with_suffix(".poll").write_text(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "unset"))

    def before_report(metrics) -> None:
        armed = metrics.get("epoch") == epoch and ray.train.get_context().get_world_rank() == rank
        if armed and marker.exists():
            marker.unlink()
            if epoch > 1:
                _wait_until_registered(epoch - 1)
            fault()

    return before_report


def _held(params: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """A before-report hook holding rank 0 once it has reported `hold_after_epoch` (at its next
    report, before Ray Train gets it) until `hold_marker` exists (at most 120 s): a test looks at
    the MLflow run meanwhile."""
    import ray.train

    epoch = int(params.pop("hold_after_epoch"))
    marker = Path(params.pop("hold_marker"))

    def before_report(metrics) -> None:
        if metrics.get("epoch") == epoch + 1 and ray.train.get_context().get_world_rank() == 0:
            deadline = time.monotonic() + _REGISTERED_WITHIN_S
            while not marker.exists():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{marker} did not appear within {_REGISTERED_WITHIN_S:.0f}s")
                time.sleep(0.1)

    return before_report


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _raise() -> None:
    raise RuntimeError("injected training failure")


def _builtin_with(config: dict[str, Any], params: dict[str, Any], before_report) -> dict[str, Any]:
    """The built-in loop with `params`, calling `before_report(metrics)` before each ray.train.report."""
    import ray.train

    from airflow_provider_rayops.jobs import builtin

    real_report = ray.train.report

    def report(metrics, *args, **kwargs):
        before_report(metrics)
        return real_report(metrics, *args, **kwargs)

    ray.train.report = report
    try:
        return builtin.tabular_mlp({**config, "params": params})
    finally:
        ray.train.report = real_report


def tabular_mlp_through_faults(config: dict[str, Any]) -> dict[str, Any]:
    """The built-in loop through what a long training meets, each once: a worker process dies
    (SIGKILL) instead of reporting `kill_epoch`; rank 0 is held after `hold_after_epoch`; the loop
    raises instead of reporting `fail_epoch` (past `max_failures`, the job fails). Hooks run in
    that order at each report."""
    params = dict(config["params"])
    hooks = [_armed(params, "kill", _kill), _held(params), _armed(params, "fail", _raise)]

    def before_report(metrics) -> None:
        for hook in hooks:
            hook(metrics)

    return _builtin_with(config, params, before_report)


NOT_A_FUNCTION = 42
