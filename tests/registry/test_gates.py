"""Promotion gates judged on evaluation dicts shaped like the evaluate job's result (no services)."""

from __future__ import annotations

import pytest

from airflow_provider_rayops.config.schema import Gate
from airflow_provider_rayops.registry.gates import GateResult, evaluate_gates, gate_policy_hash, gate_table


def _evaluation(**overrides) -> dict:
    base = {
        "metrics": {"auc": 0.79, "accuracy": 0.86, "log_loss": 0.41},
        "metric_directions": {"auc": "max", "accuracy": "max", "log_loss": "min"},
        "per_class": {
            "False": {"precision": 0.9, "recall": 0.95, "f1": 0.92, "support": 240},
            "True": {"precision": 0.7, "recall": 0.41, "f1": 0.52, "support": 60},
        },
        "latency": {"p50_ms": 1.2, "p95_ms": 3.5},
        "model_size_mb": 0.12,
        "champion": None,
        "champion_absent_reason": "registered model 'churn' does not exist",
        "gain_over_champion": None,
    }
    base.update(overrides)
    return base


def _champion(**overrides) -> dict:
    champion = {
        "version": "3",
        "metrics": {"auc": 0.75, "accuracy": 0.88, "log_loss": 0.45},
        "error": None,
        "same_as_candidate": False,
    }
    champion.update(overrides)
    return champion


def _one(gate: dict, evaluation: dict) -> GateResult:
    (result,) = evaluate_gates([gate], evaluation)
    return result


def test_a_metric_below_its_minimum_fails_and_says_by_how_much():
    result = _one({"metric": "auc", "min": 0.8}, _evaluation())
    assert (result.name, result.kind, result.metric, result.value, result.bound, result.passed) == (
        "auc >= 0.8",
        "min",
        "auc",
        0.79,
        0.8,
        False,
    )
    assert result.detail == "0.79 < 0.8 by 0.01"


def test_a_metric_within_its_bounds_passes_with_its_margin():
    result = _one({"metric": "accuracy", "min": 0.8}, _evaluation())
    assert result.passed and result.detail == "0.86 >= 0.8 (margin 0.06)"
    assert _one({"metric": "log_loss", "max": 0.5}, _evaluation()).passed


def test_a_metric_above_its_maximum_fails():
    result = _one({"metric": "log_loss", "max": 0.4}, _evaluation())
    assert not result.passed and result.name == "log_loss <= 0.4" and result.detail == "0.41 > 0.4 by 0.01"


def test_min_and_max_in_one_gate_are_two_results():
    results = evaluate_gates([{"metric": "auc", "min": 0.7, "max": 0.99}], _evaluation())
    assert [r.name for r in results] == ["auc >= 0.7", "auc <= 0.99"] and all(r.passed for r in results)


def test_a_gate_on_a_metric_the_evaluation_lacks_fails_clearly():
    result = _one({"metric": "val_auc", "min": 0.5}, _evaluation())
    assert not result.passed and result.value is None
    assert result.detail == "the evaluation has no metric 'val_auc' (it has: accuracy, auc, log_loss)"


def test_an_undefined_metric_fails():
    result = _one({"metric": "auc", "min": 0.5}, _evaluation(metrics={"auc": None}))
    assert not result.passed and "undefined" in result.detail


def test_without_a_champion_the_gain_gate_passes_by_rule_and_says_so():
    result = _one({"metric": "auc", "min_gain_over_champion": 0.01}, _evaluation())
    assert result.passed and result.value is None
    assert result.detail == "no champion (registered model 'churn' does not exist): passes by rule"


def test_a_gain_over_the_champion_passes_and_a_loss_fails():
    better = _evaluation(champion=_champion(), gain_over_champion={"auc": 0.04, "accuracy": -0.02, "log_loss": 0.04})
    gained = _one({"metric": "auc", "min_gain_over_champion": 0.0}, better)
    assert gained.passed and gained.value == 0.04
    assert gained.detail == "gain +0.04 over champion v3: 0.75 -> 0.79; 0.04 >= 0 (margin 0.04)"
    lost = _one({"metric": "accuracy", "min_gain_over_champion": 0.0}, better)
    assert not lost.passed and lost.detail.endswith("-0.02 < 0 by 0.02")


def test_a_champion_that_could_not_be_scored_fails_the_gain_gate_with_the_reason():
    evaluation = _evaluation(champion=_champion(metrics=None, error="model input column 'tenure' is missing"))
    result = _one({"metric": "auc", "min_gain_over_champion": 0.0}, evaluation)
    assert not result.passed
    assert result.detail == "champion v3 could not be scored on this data: model input column 'tenure' is missing"


def test_a_per_class_floor_applies_to_every_class_and_names_the_breaches():
    result = _one({"per_class": "recall", "min": 0.6}, _evaluation())
    assert not result.passed and result.value == 0.41 and result.name == "recall of every class >= 0.6"
    assert result.detail == "class 'True' 0.41 < 0.6 by 0.19"
    ok = _one({"per_class": "precision", "min": 0.6}, _evaluation())
    assert ok.passed and ok.detail == "lowest: class 'True' 0.7 >= 0.6 (margin 0.1)"


def test_latency_and_model_size_are_ceilings():
    latency = _one({"latency_p95_ms": 3.0}, _evaluation())
    assert not latency.passed and latency.detail == "3.5 > 3 by 0.5 ms" and latency.name == "p95 latency <= 3 ms"
    size = _one({"max_model_size_mb": 1}, _evaluation())
    assert size.passed and size.value == 0.12 and size.name == "model size <= 1 MB"


def test_a_missing_measurement_fails_its_ceiling():
    assert not _one({"latency_p95_ms": 10}, _evaluation(latency=None)).passed


def test_no_gates_means_nothing_to_fail():
    assert evaluate_gates([], _evaluation()) == []
    assert "no gates" in gate_table([])


def test_schema_gates_are_accepted_as_they_come_from_the_config():
    gates = [Gate(metric="auc", min=0.7), Gate(per_class="recall", min=0.3)]
    assert [r.passed for r in evaluate_gates(gates, _evaluation())] == [True, True]


def test_the_policy_hash_ignores_key_order_and_nulls_but_not_bounds():
    a = [{"metric": "auc", "min": 0.8}, {"latency_p95_ms": 20}]
    same = [{"min": 0.8, "metric": "auc", "max": None}, {"latency_p95_ms": 20}]
    assert (
        gate_policy_hash(a) == gate_policy_hash(same) == gate_policy_hash([Gate(metric="auc", min=0.8), Gate(latency_p95_ms=20)])
    )
    assert gate_policy_hash(a) != gate_policy_hash([{"metric": "auc", "min": 0.81}, {"latency_p95_ms": 20}])
    assert len(gate_policy_hash(a)) == 16


def test_the_gate_table_reads_as_a_table_in_the_log_and_in_markdown():
    results = evaluate_gates([{"metric": "auc", "min": 0.8}, {"max_model_size_mb": 1}], _evaluation())
    plain = gate_table(results).splitlines()
    assert plain[0].split() == ["gate", "value", "bound", "result", "detail"]
    assert "FAIL" in plain[1] and "pass" in plain[2]
    markdown = gate_table(results, markdown=True).splitlines()
    assert markdown[0] == "| gate | value | bound | result | detail |" and markdown[2].startswith(
        "| auc >= 0.8 | 0.79 | 0.8 | FAIL |"
    )


@pytest.mark.parametrize("gate", [{"min": 0.5}, {"metric": "auc"}])
def test_a_malformed_gate_is_an_error(gate):
    with pytest.raises(ValueError):
        evaluate_gates([gate], _evaluation())
