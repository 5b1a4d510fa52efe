"""The job contracts: one model of each job's arguments and result, shared by plan, operator and job."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from airflow_provider_rayops.factory.plan import JobSubmission
from airflow_provider_rayops.jobs import contracts
from airflow_provider_rayops.jobs.runtime import JobInputError
from airflow_provider_rayops.operators.run_values import UpstreamResult


def test_every_job_has_a_contract_naming_its_module():
    assert {name: c.entrypoint for name, c in contracts.CONTRACTS.items()} == {
        "ingest": "python -m airflow_provider_rayops.jobs.ingest",
        "train": "python -m airflow_provider_rayops.jobs.train",
        "tune": "python -m airflow_provider_rayops.jobs.tune",
        "evaluate": "python -m airflow_provider_rayops.jobs.evaluate",
        "drift": "python -m airflow_provider_rayops.jobs.drift",
    }


def test_a_plan_that_breaks_a_contract_fails_when_the_dag_is_built():
    with pytest.raises(ValidationError, match="snapshot_root"):
        JobSubmission(contract=contracts.INGEST, job_args={"source": "file:///x.csv", "target": "y"})
    with pytest.raises(ValidationError, match="min_rows"):
        JobSubmission(
            contract=contracts.INGEST,
            job_args={"source": "file:///x", "target": "y", "snapshot_root": "file:///s", "min_rows": 1},
        )
    # run-time values are checked through their previews
    ok = JobSubmission(
        contract=contracts.EVALUATE, job_args={"model_uri": UpstreamResult("train.fit", "model_uri"), "snapshot_uri": "file:///s"}
    )
    assert ok.entrypoint == "python -m airflow_provider_rayops.jobs.evaluate"


def test_a_job_names_the_argument_it_cannot_take():
    with pytest.raises(
        JobInputError, match=r"^job argument metrics=\['rocauc'\]: unknown metric\(s\) 'rocauc'; known metrics: accuracy"
    ):
        contracts.EvaluateArgs.parse({"model_uri": "m", "snapshot_uri": "s", "metrics": ["rocauc"]})
    train = {"snapshot_uri": "s", "entrypoint": "rayops.builtin:tabular_mlp", "run_root": "file:///r", "experiment": "e"}
    assert contracts.TrainArgs.parse(train).entrypoint == "rayops.builtin:tabular_mlp"
    with pytest.raises(
        JobInputError, match=r"^job argument 'snapshot_urii' is not known; expected some of checkpoint, entrypoint"
    ):
        contracts.TrainArgs.parse({**train, "snapshot_urii": "x"})
    assert contracts.EvaluateArgs.parse({"model_uri": "m", "snapshot_uri": "s", "metrics": ["auc", "auc"]}).metrics == ["auc"]
