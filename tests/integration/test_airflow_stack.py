"""Deferral through the real triggerer, proven with Airflow's own deferrable operators.

`dag.test()` runs a trigger inline and drops `defer(kwargs=...)`; these tests run one DAG on
the real scheduler, LocalExecutor and triggerer (`airflow_stack`) and check what only the
real services do. The ray job tests build on the same checks.
"""

from __future__ import annotations

import pytest

DAG_ID = "stack_defer_probe"

DAG_SOURCE = f'''
import datetime

from airflow.providers.standard.sensors.date_time import DateTimeSensorAsync
from airflow.providers.standard.triggers.temporal import TimeDeltaTrigger
from airflow.sdk import DAG, BaseOperator


class DeferWithKwargs(BaseOperator):
    def execute(self, context):
        self.defer(
            trigger=TimeDeltaTrigger(datetime.timedelta(seconds=2)),
            method_name="resume",
            kwargs={{"token": "kept"}},
        )

    def resume(self, context, event=None, token=None):
        return {{"token": token}}


with DAG("{DAG_ID}", schedule=None, catchup=False):
    # Rendered just before execute(), so the sensor always has to wait, however slow the start.
    DateTimeSensorAsync(
        task_id="wait",
        target_time="{{{{ (macros.datetime.now().astimezone() + macros.timedelta(seconds=2)).isoformat() }}}}",
    )
    DeferWithKwargs(task_id="kwargs")
'''


@pytest.fixture(scope="module")
def probe_run(airflow_stack):
    airflow_stack.write_dag(f"{DAG_ID}.py", DAG_SOURCE)
    return airflow_stack.run_dag(DAG_ID, timeout=120)


def test_deferrable_sensor_run_succeeds(probe_run):
    assert probe_run.state == "success"
    assert probe_run.task_instances["wait"].state == "success"


def test_deferrable_sensor_releases_its_worker_slot_while_waiting(airflow_stack, probe_run):
    ti = probe_run.task_instances["wait"]
    # running -> deferred (slot released) -> running again to resume -> success
    assert ti.events == ("running", "deferred", "running", "success")
    assert "Pausing task as DEFERRED" in airflow_stack.task_log(DAG_ID, probe_run.run_id, "wait")


def test_deferred_sensors_trigger_runs_in_the_triggerer_process(airflow_stack, probe_run):
    trigger_log = airflow_stack.trigger_log(DAG_ID, probe_run.run_id, "wait")
    assert "Trigger fired event" in trigger_log
    assert "trigger completed" in trigger_log
    # The UI's task log merges what the triggerer wrote.
    assert "Trigger fired event" in airflow_stack.task_log(DAG_ID, probe_run.run_id, "wait")


def test_real_triggerer_keeps_defer_kwargs(airflow_stack, probe_run):
    assert probe_run.task_instances["kwargs"].events == ("running", "deferred", "running", "success")
    assert airflow_stack.xcom(DAG_ID, probe_run.run_id, "kwargs") == {"token": "kept"}
