"""Real models for the registry tests, logged on the real MLflow server as the train job logs them.

Tiny TabularMLPs trained here in a second on a seeded churn snapshot (as in tests/jobs/test_evaluate.py):
"weak" (undertrained: good AUC, finds few churners), "strong" (better on both) and "bad" (trained on
inverted labels). Each gets a training run of its own with the train job's lineage tags, and
`evaluate` runs the real evaluate job in this process against a registered model's champion, so gate
inputs are the job's real output.

Import the fixtures by name into a test module: `from tests.registry.models import mlflow_registry, trained`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_rayops import tag_names as names
from airflow_provider_rayops.jobs import evaluate, tracking
from tests.fixtures.models import churn_snapshot, fit_tiny_model, log_as_training_run

ROWS = 1500
SEED = 23
EXPERIMENT = "registry-tests"
FAST_LATENCY = {"batch_size": 64, "batches": 4, "warmup": 1}
METRICS = ["accuracy", "auc", "f1", "log_loss"]
CONN_ID = "rayops_mlflow_registry_test"
# name -> (full-batch Adam steps, learning rate, inverted labels). On this data: weak auc ~0.79 with
# recall of the churners ~0.27, strong auc ~0.80 with recall ~0.49, bad auc ~0.23.
RECIPES = {"weak": (60, 0.003, False), "strong": (20, 0.03, False), "bad": (150, 0.03, True)}


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class TrainedModel:
    """A training run with its logged model and the lineage the train job would have tagged."""

    name: str
    run_id: str
    model_uri: str
    lineage: dict[str, str]


@dataclass(frozen=True)
class MlflowRegistry:
    """The session's MLflow server as the tests reach it."""

    tracking_uri: str
    conn_id: str
    snapshot: dict[str, Any]

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def evaluate(self, model: TrainedModel, *, registered_model: str | None, champion_alias: str = "champion") -> dict[str, Any]:
        """The evaluate job's result for `model`, against `registered_model@champion_alias` if given."""
        args = {
            "model_uri": model.model_uri,
            "snapshot_uri": self.snapshot["snapshot_uri"],
            "metrics": METRICS,
            "latency": FAST_LATENCY,
            "mlflow_run_id": model.run_id,
            "registered_model": registered_model,
            "champion_alias": champion_alias,
        }
        result = evaluate.main(args)
        return json.loads(json.dumps(result))  # exactly what travels through XCom


@pytest.fixture(scope="session")
def registry_snapshot(tmp_path_factory) -> dict[str, Any]:
    return churn_snapshot(tmp_path_factory.mktemp("registry-churn"), rows=ROWS, seed=SEED)


@pytest.fixture(scope="session")
def mlflow_registry(mlflow_server, registry_snapshot) -> Iterator[MlflowRegistry]:
    """The MLflow server as MLFLOW_TRACKING_URI (for the jobs) and as an Airflow connection (for operators)."""
    host, port = mlflow_server.rsplit(":", 1)
    conn = json.dumps({"conn_type": "rayops_mlflow", "host": host, "port": int(port)})
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(tracking.TRACKING_URI_ENV, mlflow_server)
        mp.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", conn)
        yield MlflowRegistry(tracking_uri=mlflow_server, conn_id=CONN_ID, snapshot=registry_snapshot)


def log_training(registry: MlflowRegistry, checkpoint: Path, *, name: str) -> TrainedModel:
    """A training run holding the checkpoint's model, tagged and logged as the train job does."""
    snapshot = registry.snapshot
    lineage = {
        "snapshot_uri": snapshot["snapshot_uri"],
        "snapshot_hash": snapshot["content_hash"],
        "config_hash": f"cfg-{name}-1a2b3c",
        "config_git_commit": "0123456789abcdef0123456789abcdef01234567",
        "pipeline": "churn",
        "dag_id": "churn",
        "run_id": f"manual__2026-01-01T00:00:00+00:00-{name}",
        "task_id": "train.fit",
        "try_number": 1,
        "ray_job_id": f"rayops-churn--train.fit--{name}-1",
    }
    tags = {**tracking.lineage_tags(lineage), names.RUN_KIND: "train"}
    run_id, model_uri = log_as_training_run(checkpoint, snapshot, experiment=EXPERIMENT, tags=tags)
    return TrainedModel(name=name, run_id=run_id, model_uri=model_uri, lineage=tracking.lineage_tags(lineage))


@pytest.fixture(scope="session")
def trained(mlflow_registry, tmp_path_factory) -> dict[str, TrainedModel]:
    """weak, strong and bad models, each on a training run of its own on the MLflow server."""
    folder = tmp_path_factory.mktemp("registry-ckpt")
    out = {}
    for name, (steps, lr, invert) in RECIPES.items():
        checkpoint = fit_tiny_model(mlflow_registry.snapshot, steps=steps, lr=lr, invert=invert, folder=folder / name)
        out[name] = log_training(mlflow_registry, checkpoint, name=name)
    return out
