"""The drift job (a Ray job): the monitor's check on data larger than an Airflow worker should hold.

    python -m airflow_provider_rayops.jobs.drift      # args in RAYOPS_JOB_ARGS (JSON): contracts.DriftArgs

Runs `drift.compute_drift(reference, current, options, prediction_reference=...)` on the cluster
(its storage settings come from the job's environment), writes drift.json and drift.html under
`report_folder`, and reports `{result, report_uri, report_html_uri}`. An input that cannot be read
at all (a missing file) exits 1 naming it; input the check cannot judge (a missing column) is a
result with `problems`, as in the worker.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_provider_rayops.jobs import contracts
from airflow_provider_rayops.jobs.runtime import JobInputError, phase, run_job


def main(args: Mapping[str, Any] | contracts.DriftArgs) -> dict[str, Any]:
    from airflow_provider_rayops.drift import DriftInputError, compute_drift
    from airflow_provider_rayops.drift.check import write_report
    from airflow_provider_rayops.drift.compute import drift_options

    spec = contracts.DriftArgs.parse(args)
    try:
        with phase("compute"):
            result = compute_drift(
                spec.reference, spec.current, drift_options(spec.options), prediction_reference=spec.prediction_reference
            )
    except DriftInputError as exc:
        raise JobInputError(str(exc)) from None
    with phase("report"):
        json_uri, html_uri = write_report(result, spec.report_folder.rstrip("/"), title=spec.title, details=spec.details)
    return contracts.DriftJobResult(result=result.to_json(), report_uri=json_uri, report_html_uri=html_uri).model_dump(
        mode="json"
    )


if __name__ == "__main__":
    run_job(main)
