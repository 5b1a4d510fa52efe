"""Helpers for code that runs inside a Ray job: its arguments in, its result out, and
`import_object` for the "module:attribute" names its arguments and artifacts carry (a
training loop's entrypoint, a model's class).

A rayops job is a plain Python module run by Ray (`python -m airflow_provider_rayops.jobs.x`).
SubmitRayJobOperator hands it a JSON dict in the `RAYOPS_JOB_ARGS` environment variable and
reads its result back from the job's log: one line `::rayops-result::{json}` (the last one
wins). Results are small dicts (URIs, metrics, run ids); data stays in storage.

    from airflow_provider_rayops.jobs import JobInputError, run_job

    def main(args: dict) -> dict:
        if "source" not in args:
            raise JobInputError("job argument 'source' is required")
        return {"rows": 42}

    if __name__ == "__main__":
        run_job(main)

This module imports no Airflow: Ray workers may not have it installed.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

JOB_ARGS_ENV = "RAYOPS_JOB_ARGS"
# The rayops version of the Airflow that submitted the job: its job code must be the same version.
PROVIDER_VERSION_ENV = "RAYOPS_PROVIDER_VERSION"
RESULT_MARKER = "::rayops-result::"
USER_ERROR_EXIT_CODE = 1


class JobInputError(Exception):
    """A problem with what the user asked for (bad argument, missing input), not a bug.

    `run_job` reports it as one clear line on stderr and exit code 1, without a traceback.
    """


def job_args() -> dict[str, Any]:
    """The job's arguments: the JSON object in $RAYOPS_JOB_ARGS, or {} when it is unset."""
    raw = os.environ.get(JOB_ARGS_ENV, "").strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise JobInputError(f"{JOB_ARGS_ENV} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise JobInputError(f"{JOB_ARGS_ENV} must be a JSON object, got {type(value).__name__}")
    return value


def report_result(result: Mapping[str, Any]) -> None:
    """Print the job's result as the marker line the operator reads (the last one printed wins)."""
    if not isinstance(result, Mapping):
        raise TypeError(f"a job result must be a dict, got {type(result).__name__}")
    line = RESULT_MARKER + json.dumps(dict(result), separators=(",", ":"), sort_keys=True, allow_nan=False)
    # One write, flushed, so the line never interleaves with other output in the driver log.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def parse_result(logs: str) -> dict[str, Any] | None:
    """The result a job reported in its logs (last marker wins), or None when it reported none.

    The marker may follow a prefix (Ray prefixes lines printed by tasks and actors).
    """
    for line in reversed(logs.splitlines()):
        pos = line.find(RESULT_MARKER)
        if pos < 0:
            continue
        try:
            value = json.loads(line[pos + len(RESULT_MARKER) :])
        except json.JSONDecodeError:
            continue  # a truncated or foreign line; an earlier complete one may still be valid
        if isinstance(value, dict):
            return value
    return None


def check_provider_version() -> None:
    """JobInputError when the Airflow that submitted this job runs another rayops version than this
    job code: its arguments and result would not mean the same on both sides."""
    from airflow_provider_rayops import __version__

    submitted_by = os.environ.get(PROVIDER_VERSION_ENV)
    if submitted_by and submitted_by != __version__:
        raise JobInputError(
            f"this job runs airflow-provider-rayops {__version__} job code ({os.path.dirname(os.path.dirname(__file__))}), "
            f"but was submitted by Airflow with {submitted_by}; install that version on the cluster, or set the "
            "compute profile's code: ship (or auto) to send Airflow's job code with each job"
        )


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Time a part of a job: prints `rayops phase <name>: 1.23 s` to the job's log, where a user
    looking at the Airflow task log sees what the stage spent its time on."""
    started = time.perf_counter()
    try:
        yield
    finally:
        print(f"rayops phase {name}: {time.perf_counter() - started:.2f} s", flush=True)


def run_job(main: Callable[[dict[str, Any]], Mapping[str, Any] | None]) -> Mapping[str, Any] | None:
    """Run `main(job_args())` and report what it returns as the job's result.

    A `JobInputError` ends the process with one line on stderr and exit code 1; any other
    exception propagates with its traceback (a bug should show where it is).
    """
    # The interpreter's start and the imports before this (the job module's own) count too.
    print(f"rayops phase start: {time.time() - _process_started():.2f} s", flush=True)
    try:
        check_provider_version()
        result = main(job_args())
    except JobInputError as exc:
        sys.stdout.flush()
        sys.stderr.write(f"rayops job input error: {exc}\n")
        sys.stderr.flush()
        raise SystemExit(USER_ERROR_EXIT_CODE) from None
    if result is not None:
        report_result(result)
    return result


def _process_started() -> float:
    """When this process started (Unix time), from /proc; now where there is no /proc."""
    try:
        with open("/proc/self/stat") as stat:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/stat") as system:
            boot = next(int(line.split()[1]) for line in system if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


class NoSuchAttribute(AttributeError):
    """`import_object`: the module imported, but has nothing at the attribute path."""


def import_object(path: str) -> Any:
    """The object at "package.module:attribute" (attribute may be dotted).

    ValueError when `path` is not of that form; what importing the module raises (ImportError,
    or anything the module's own code raises); `NoSuchAttribute`, with AttributeError's message,
    when the module imported but lacks the attribute.
    """
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"{path!r} is not of the form module:attribute")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise NoSuchAttribute(*exc.args) from exc
    return obj
