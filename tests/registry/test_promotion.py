"""The registry plane against a real MLflow tracking server (127.0.0.1, artifacts on the S3 endpoint)."""

from __future__ import annotations

import json

import pytest

from airflow_provider_rayops import tag_names as names
from airflow_provider_rayops.registry import aliases, audit, errors, registration, version_tags
from airflow_provider_rayops.registry.gates import evaluate_gates, gate_policy_hash
from tests.registry.models import mlflow_registry, registry_snapshot, trained, unique_name

GATES = [{"metric": "auc", "min": 0.5}, {"metric": "auc", "min_gain_over_champion": 0.0}]


def _register(client, name, model, **kw):
    return registration.register_version(
        client, registered_model=name, model_uri=model.model_uri, run_id=model.run_id, tags=model.lineage, description="d", **kw
    )


def test_a_version_is_registered_from_the_training_runs_logged_model(mlflow_registry, trained):
    client, name, strong = mlflow_registry.client(), unique_name("reg"), trained["strong"]
    version, created = _register(client, name, strong)
    assert created and version.version == "1" and version.run_id == strong.run_id
    assert version.source == strong.model_uri  # REST drops model_id from versions; the source keeps it
    tags = client.get_model_version(name, "1").tags
    assert tags[names.TRAIN_RUN_ID] == strong.run_id and tags["rayops.snapshot_hash"] == strong.lineage["rayops.snapshot_hash"]
    linked = json.loads(client.get_logged_model(registration.logged_model_id(strong.model_uri)).tags["mlflow.modelVersions"])
    assert {"name": name, "version": "1"} in linked


def test_registering_the_same_training_run_again_reuses_its_version(mlflow_registry, trained):
    client, name = mlflow_registry.client(), unique_name("reg")
    first, _ = _register(client, name, trained["weak"])
    again, created = _register(client, name, trained["weak"])
    assert not created and again.version == first.version
    other, created_other = _register(client, name, trained["strong"])
    assert created_other and other.version == "2"
    assert len(client.search_model_versions(f"name = '{name}'")) == 2


def test_the_previous_champion_keeps_an_alias_and_a_repeat_moves_nothing(mlflow_registry, trained):
    client, name = mlflow_registry.client(), unique_name("alias")
    v1, _ = _register(client, name, trained["weak"])
    v2, _ = _register(client, name, trained["strong"])
    first = aliases.promote_to_champion(client, name, v1.version)
    assert (first.champion, first.previous, first.changed) == ("1", None, True)
    aliases.set_challenger(client, name, v2.version)
    second = aliases.promote_to_champion(client, name, v2.version)
    assert (second.champion, second.previous, second.changed) == ("2", "1", True)
    repeat = aliases.promote_to_champion(client, name, v2.version)
    assert (repeat.previous, repeat.changed) == ("1", False)
    pointing = client.get_registered_model(name).aliases
    assert pointing == {"champion": "2", "previous": "1"}  # the challenger alias left with the promotion


def test_gate_results_are_version_tags(mlflow_registry, trained):
    client, name, weak = mlflow_registry.client(), unique_name("gates"), trained["weak"]
    version, _ = _register(client, name, weak)
    evaluation = {"metrics": {"auc": 0.4}, "champion": None, "champion_absent_reason": "none yet"}
    results = evaluate_gates(GATES, evaluation)
    version_tags.record_gate_results(client, name, version.version, results, gates=GATES)
    tags = client.get_model_version(name, version.version).tags
    assert tags[names.GATES_PASSED] == "false" and tags[names.GATES_FAILED] == "auc >= 0.5"
    assert tags["rayops.gate.0"] == "FAIL auc >= 0.5: 0.4 < 0.5 by 0.1"
    assert tags["rayops.gate.1"].startswith("PASS auc gain over champion >= 0: no champion")
    assert json.loads(tags[names.GATE_POLICY]) == GATES
    assert [r["passed"] for r in json.loads(tags[names.GATES])] == [False, True]
    assert tags[names.POLICY_HASH] == gate_policy_hash(GATES)
    # Code in Airflow writes no artifacts (MlflowHook.get_conn() carries no artifact credentials).
    assert client.list_artifacts(weak.run_id, "gates.json") == []


def test_policy_approval_refuses_a_version_whose_gates_failed(mlflow_registry, trained):
    client, name = mlflow_registry.client(), unique_name("refuse")
    version, _ = _register(client, name, trained["bad"])
    results = evaluate_gates(GATES[:1], {"metrics": {"auc": 0.2}})
    version_tags.record_gate_results(client, name, version.version, results, gates=GATES[:1])
    with pytest.raises(errors.PromotionRefused, match=r"v1 cannot be promoted: gates failed: auc >= 0.5"):
        audit.record_policy_approval(client, name, version.version)


def test_the_ui_link_names_the_version_and_never_credentials():
    url = audit.model_version_ui_url("http://bob:s3cret@mlflow.ml:5000/", "churn model", 3)
    assert url == "http://mlflow.ml:5000/#/models/churn%20model/versions/3"
    assert audit.model_version_ui_url("sqlite:////tmp/mlflow.db", "churn", 3) == ""
