"""A plain Airflow DAG that runs a Ray job on an existing cluster: no YAML, no DAG factory.

The cluster is the Airflow connection `ray_prod` (type `rayops_ray`: host = dashboard URL,
password = Ray auth token). The job reports its result with one line, `::rayops-result::<json>`,
which becomes the task's XCom; the cluster needs nothing of rayops installed for that.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_rayops.operators.ray_job import SubmitRayJobOperator

SUM_OF_SQUARES = (
    'python -c "import json, sys; n = int(sys.argv[1]); '
    "print('::rayops-result::' + json.dumps({'n': n, 'sum_of_squares': sum(i * i for i in range(n))}))\" "
)

with DAG(
    dag_id="ray_job_example",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    params={"n": Param(1000, type="integer", minimum=1)},
):
    SubmitRayJobOperator(
        task_id="sum_of_squares",
        ray_conn_id="ray_prod",
        entrypoint=SUM_OF_SQUARES + "{{ params.n }}",
        entrypoint_num_cpus=0.5,
        deferrable=True,  # the worker slot is free while the job runs; the triggerer follows it
    )
