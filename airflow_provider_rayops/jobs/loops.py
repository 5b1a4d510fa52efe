"""Training loops: which one a `train.entrypoint` names, and what the built-in loop's params are.

Torch-free on purpose: `rayops validate` checks an entrypoint and the built-in loop's params in
an Airflow environment that has no torch (the core install); only running a built-in loop
imports jobs/builtin.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_rayops.config.policy import BUILTIN_MODULE
from airflow_provider_rayops.jobs.runtime import JobInputError, NoSuchAttribute, import_object

# The built-in loop's params, their defaults and what each must be.
TABULAR_MLP_DEFAULTS: dict[str, Any] = {
    "epochs": 10,
    "lr": 1e-3,
    "batch_size": 256,
    "hidden_sizes": [64, 64],
    "dropout": 0.1,
    "weight_decay": 0.0,
    "seed": 0,
    # Keep this worker's shard on its device for the whole run (the fastest way to feed a GPU
    # from a tabular snapshot); false streams batches from Ray Data every epoch instead; auto
    # caches unless the snapshot is too large for the object store (train.MATERIALIZE_MAX_SHARE).
    "cache_on_device": "auto",
    # auto: cross-entropy for classification, mse for regression; huber (regression) is
    # gentler with outliers of the target.
    "loss": "auto",
}
LOSSES = {"classification": ("auto", "cross_entropy"), "regression": ("auto", "mse", "huber")}


def tabular_mlp_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """The built-in loop's params with defaults filled in; JobInputError names a bad one."""
    unknown = sorted(set(params) - set(TABULAR_MLP_DEFAULTS))
    if unknown:
        raise JobInputError(
            f"params.{unknown[0]}: not a parameter of rayops.builtin:tabular_mlp; "
            f"it takes {', '.join(sorted(TABULAR_MLP_DEFAULTS))}"
        )
    out = {**TABULAR_MLP_DEFAULTS, **params}

    def _int(name: str, low: int) -> None:
        value = out[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < low:
            raise JobInputError(f"params.{name}={value!r}: expected an integer >= {low}")
        out[name] = int(value)

    def _float(name: str, low: float, high: float | None = None, *, open_low: bool = False) -> None:
        value = out[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise JobInputError(f"params.{name}={value!r}: expected a number")
        if value < low or (open_low and value == low) or (high is not None and value >= high):
            bounds = f"{'>' if open_low else '>='} {low}" + (f" and < {high}" if high is not None else "")
            raise JobInputError(f"params.{name}={value!r}: expected a number {bounds}")
        out[name] = float(value)

    _int("epochs", 1)
    _int("batch_size", 1)
    _int("seed", 0)
    _float("lr", 0.0, open_low=True)
    _float("dropout", 0.0, 1.0)
    _float("weight_decay", 0.0)
    hidden = out["hidden_sizes"]
    if isinstance(hidden, int) and not isinstance(hidden, bool):
        hidden = [hidden]
    if not isinstance(hidden, (list, tuple)) or not all(
        isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in hidden
    ):
        raise JobInputError(f"params.hidden_sizes={out['hidden_sizes']!r}: expected a list of positive integers, e.g. [64, 64]")
    out["hidden_sizes"] = list(hidden)
    if not isinstance(out["cache_on_device"], bool) and out["cache_on_device"] != "auto":
        raise JobInputError(f"params.cache_on_device={out['cache_on_device']!r}: expected true, false or auto")
    known = sorted({loss for losses in LOSSES.values() for loss in losses})
    if out["loss"] not in known:
        raise JobInputError(f"params.loss={out['loss']!r}: expected one of {', '.join(known)}")
    return out


def check_loss_fits(params: Mapping[str, Any], task: str) -> None:
    """JobInputError when the built-in loop's `params.loss` is not one for the snapshot's task kind."""
    loss = params.get("loss", "auto")
    if loss not in LOSSES[task]:
        raise JobInputError(f"params.loss={loss!r}: the task is {task}, whose losses are {', '.join(LOSSES[task])}")


BUILTIN_PARAMS: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {"tabular_mlp": tabular_mlp_params}
"""The built-in loops by name (`rayops.builtin:<name>`), each with its params check."""


@dataclass(frozen=True)
class Entrypoint:
    """A resolved training loop: a user's function, or the name of one of ours (`builtin`)."""

    path: str
    function: Callable[[Mapping[str, Any]], Any] | None = None
    builtin: str | None = None

    @property
    def loop(self) -> Callable[[Mapping[str, Any]], Any]:
        """The per-worker function (a built-in one imports torch here, on the cluster)."""
        if self.builtin is not None:
            from airflow_provider_rayops.jobs.builtin import BUILTIN_LOOPS

            return BUILTIN_LOOPS[self.builtin]
        assert self.function is not None
        return self.function

    def check_task(self, params: Mapping[str, Any], task: str) -> None:
        """JobInputError when the resolved `params` do not fit the snapshot's task kind (a built-in loop's loss)."""
        if self.builtin is not None:
            check_loss_fits(params, task)

    def resolve_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        if self.builtin is not None:
            return BUILTIN_PARAMS[self.builtin](params)
        epochs = params.get("epochs", 1)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise JobInputError(f"params.epochs={epochs!r}: expected an integer >= 1 (the loop's last epoch)")
        return dict(params)


def resolve_entrypoint(path: str) -> Entrypoint:
    """The loop named by `path`; JobInputError with the import error first when it fails.

    `rayops.builtin:<name>` is a built-in loop (`BUILTIN_PARAMS` names them; jobs/builtin.py
    defines them); anything else is imported as module:function from the job's Python path
    (installed packages, or the job's runtime_env working_dir / py_modules).
    """
    module_name, _, attribute = path.partition(":")
    if module_name == BUILTIN_MODULE:
        if attribute not in BUILTIN_PARAMS:
            raise JobInputError(
                f"entrypoint {path!r}: no built-in loop {attribute!r}; built-in loops: "
                + ", ".join(f"{BUILTIN_MODULE}:{name}" for name in sorted(BUILTIN_PARAMS))
            )
        return Entrypoint(path=path, builtin=attribute)
    try:
        obj = import_object(path)
    except NoSuchAttribute as exc:
        raise JobInputError(f"AttributeError: {exc} -- entrypoint {path!r} names no function {attribute!r}") from None
    except Exception as exc:  # ImportError, anything the module raises while importing, or no "module:" in path
        raise JobInputError(
            f"{type(exc).__name__}: {exc} -- entrypoint {path!r} cannot be imported; is module "
            f"{module_name!r} installed on the Ray cluster or shipped in the job's working_dir?"
        ) from None
    if not callable(obj):
        raise JobInputError(f"entrypoint {path!r} is a {type(obj).__name__}, not a function taking the loop config")
    return Entrypoint(path=path, function=obj)
