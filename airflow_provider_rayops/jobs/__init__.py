"""Code that runs inside Ray jobs. Nothing here imports Airflow: Ray workers may not have it."""

from airflow_provider_rayops.jobs.runtime import (
    JOB_ARGS_ENV,
    RESULT_MARKER,
    JobInputError,
    job_args,
    parse_result,
    report_result,
    run_job,
)

__all__ = ["JOB_ARGS_ENV", "RESULT_MARKER", "JobInputError", "job_args", "parse_result", "report_result", "run_job"]
