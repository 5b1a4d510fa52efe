"""The evaluate job on seeded churn data, with real models logged to real MLflow stores.

Models are tiny TabularMLPs trained here in a second (full-batch Adam on the train split) and
logged the way the train job logs them (tracking.log_model: the pyfunc of raw rows), so the
job reads them exactly as it reads the train job's. A "bad" model is trained on inverted labels.
Most tests use a sqlite store in tmp; the champion tests use the real `mlflow server` with S3
artifacts (moto).
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from airflow_provider_rayops import storage
from airflow_provider_rayops.config.schema import CLASSIFICATION_METRICS
from airflow_provider_rayops.jobs import evaluate, modeling, tracking
from airflow_provider_rayops.jobs.runtime import JOB_ARGS_ENV, JobInputError, parse_result
from tests.fixtures.models import churn_snapshot, delivery_snapshot, fit_tiny_model, log_as_training_run

ROOT = Path(__file__).resolve().parents[2]
ROWS = 2000
SEED = 11
EXPERIMENT = "churn-eval-tests"
FAST_LATENCY = {"batch_size": 128, "batches": 8, "warmup": 2}
ALL_METRICS = list(CLASSIFICATION_METRICS)


# -- fixtures: data, models, stores ------------------------------------------------------------


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> dict:
    return churn_snapshot(tmp_path_factory.mktemp("eval-churn"), rows=ROWS, seed=SEED)


def _train(snapshot: dict, *, invert: bool, folder: Path) -> Path:
    """A tiny model fitted on the train split (labels inverted for a deliberately bad model)."""
    return fit_tiny_model(snapshot, folder=folder, invert=invert)


def _log(checkpoint: Path, snapshot: dict) -> dict:
    """A training run holding the checkpoint's model, logged as the train job does: {run_id, model_uri}."""
    run_id, model_uri = log_as_training_run(checkpoint, snapshot, experiment=EXPERIMENT)
    return {"run_id": run_id, "model_uri": model_uri}


@pytest.fixture(scope="module")
def checkpoints(snapshot, tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("eval-ckpt")
    return {
        "good": _train(snapshot, invert=False, folder=folder / "good"),
        "bad": _train(snapshot, invert=True, folder=folder / "bad"),
    }


@pytest.fixture(scope="module")
def sqlite_store(tmp_path_factory, snapshot, checkpoints) -> Iterator[dict]:
    """A sqlite MLflow store with the good and the bad model logged on runs of their own."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('eval-mlflow')}/mlflow.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(tracking.TRACKING_URI_ENV, uri)
        yield {"uri": uri, **{name: _log(folder, snapshot) for name, folder in checkpoints.items()}}


@pytest.fixture
def on_sqlite(sqlite_store, monkeypatch) -> dict:
    monkeypatch.setenv(tracking.TRACKING_URI_ENV, sqlite_store["uri"])
    return sqlite_store


def _args(snapshot: dict, model_uri: str, **overrides) -> dict:
    return {
        "model_uri": model_uri,
        "snapshot_uri": snapshot["snapshot_uri"],
        "metrics": ALL_METRICS,
        "latency": FAST_LATENCY,
        **overrides,
    }


@pytest.fixture(scope="module")
def good_result(sqlite_store, snapshot) -> dict:
    """The good model evaluated once, logged into its training run (no registered model)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(tracking.TRACKING_URI_ENV, sqlite_store["uri"])
        good = sqlite_store["good"]
        return evaluate.main(_args(snapshot, good["model_uri"], mlflow_run_id=good["run_id"], registered_model="churn-eval"))


# -- what a result holds -----------------------------------------------------------------------


def test_the_result_has_the_documented_keys(good_result):
    assert set(good_result) == {
        "format_version", "model_uri", "snapshot_uri", "snapshot_hash", "split", "rows", "task", "classes", "positive_class",
        "metric_directions", "metrics", "per_class", "latency", "model_size_bytes", "model_size_mb", "champion",
        "champion_absent_reason", "gain_over_champion", "mlflow_run_id", "tracking_uri", "evaluation_uri", "predictions_uri",
    }  # fmt: skip
    assert good_result["format_version"] == 1
    assert list(good_result["metrics"]) == ALL_METRICS
    assert good_result["classes"] == ["False", "True"] and good_result["positive_class"] == "True"
    assert good_result["metric_directions"]["log_loss"] == "min" and good_result["metric_directions"]["auc"] == "max"
    json.dumps(good_result, allow_nan=False)  # it must travel through XCom and the result marker


def test_a_trained_model_scores_well_overall(good_result, snapshot):
    metrics = good_result["metrics"]
    assert metrics["auc"] > 0.6
    assert 0.5 < metrics["accuracy"] <= 1.0
    assert all(0.0 <= metrics[name] <= 1.0 for name in ("balanced_accuracy", "precision", "recall", "f1"))
    assert 0.0 < metrics["log_loss"] < 0.69  # better than a coin flip
    assert good_result["rows"] == snapshot["validation"].num_rows
    assert good_result["snapshot_hash"] == snapshot["content_hash"]


def test_per_class_metrics_are_keyed_by_label_and_supports_add_up(good_result, snapshot):
    per_class = good_result["per_class"]
    assert set(per_class) == {"False", "True"}
    for values in per_class.values():
        assert set(values) == {"precision", "recall", "f1", "support"}
        assert all(0.0 <= values[k] <= 1.0 for k in ("precision", "recall", "f1"))
    churned = snapshot["validation"].column("churned").to_pylist()
    assert per_class["True"]["support"] == sum(churned)
    assert per_class["True"]["support"] + per_class["False"]["support"] == len(churned)
    # binary precision / recall / f1 are those of the positive class
    assert good_result["metrics"]["recall"] == per_class["True"]["recall"]


def test_latency_and_model_size_are_measured(good_result):
    latency = good_result["latency"]
    assert {k: latency[k] for k in ("batch_size", "batches", "warmup")} == FAST_LATENCY
    assert 0.0 < latency["p50_ms"] <= latency["p95_ms"] <= latency["max_ms"] < 10_000
    assert latency["device"] == "cpu" and latency["threads"] >= 1
    assert good_result["model_size_bytes"] > 1000
    assert good_result["model_size_mb"] == pytest.approx(good_result["model_size_bytes"] / 1e6)


def test_a_deliberately_bad_model_scores_lower(on_sqlite, snapshot, good_result):
    bad = evaluate.main(_args(snapshot, on_sqlite["bad"]["model_uri"]))
    assert bad["metrics"]["auc"] < 0.5 < good_result["metrics"]["auc"]
    assert bad["metrics"]["log_loss"] > good_result["metrics"]["log_loss"]
    assert bad["metrics"]["accuracy"] < good_result["metrics"]["accuracy"]


def test_without_a_champion_the_champion_is_null_with_the_reason(good_result):
    assert good_result["champion"] is None
    assert good_result["gain_over_champion"] is None
    assert good_result["champion_absent_reason"] == "registered model 'churn-eval' does not exist"


def test_a_checkpoint_folder_is_evaluated_like_a_logged_model(on_sqlite, snapshot, checkpoints, good_result):
    result = evaluate.main(_args(snapshot, f"file://{checkpoints['good']}", latency={"batches": 2, "warmup": 0}))
    for name in ("accuracy", "auc", "log_loss"):
        assert result["metrics"][name] == pytest.approx(good_result["metrics"][name], abs=1e-6)
    assert result["champion_absent_reason"] == "no registered_model given"


# -- the metric definitions --------------------------------------------------------------------


def test_binary_metrics_match_scikit_learn(snapshot, checkpoints):
    import sklearn.metrics as sk  # a declared test dependency: the reference implementation

    predictor = modeling.load_predictor(str(checkpoints["good"]))
    y = predictor.encoder.encode_target(snapshot["validation"])
    proba = predictor.predict_proba(snapshot["validation"])
    got = evaluate.classification_metrics(y, proba, predictor.classes, ALL_METRICS)["metrics"]
    pred = proba.argmax(axis=1)
    assert got["accuracy"] == pytest.approx(sk.accuracy_score(y, pred))
    assert got["balanced_accuracy"] == pytest.approx(sk.balanced_accuracy_score(y, pred))
    assert got["auc"] == pytest.approx(sk.roc_auc_score(y, proba[:, 1]))
    assert got["precision"] == pytest.approx(sk.precision_score(y, pred, zero_division=0))
    assert got["recall"] == pytest.approx(sk.recall_score(y, pred))
    assert got["f1"] == pytest.approx(sk.f1_score(y, pred))
    assert got["log_loss"] == pytest.approx(sk.log_loss(y, proba), rel=1e-6)


def test_multiclass_metrics_are_macro_and_auc_is_one_vs_rest(snapshot):
    import sklearn.metrics as sk  # a declared test dependency: the reference implementation

    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 400)
    logits = rng.normal(size=(400, 3)) + 1.5 * np.eye(3)[y]
    logits[:50] = np.round(logits[:50])  # ties in the scores
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    scored = evaluate.classification_metrics(y, proba, ["a", "b", "c"], ALL_METRICS)
    got = scored["metrics"]
    pred = proba.argmax(axis=1)
    assert got["auc"] == pytest.approx(sk.roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    assert got["f1"] == pytest.approx(sk.f1_score(y, pred, average="macro"))
    assert got["precision"] == pytest.approx(sk.precision_score(y, pred, average="macro"))
    assert got["log_loss"] == pytest.approx(sk.log_loss(y, proba), rel=1e-6)
    assert set(scored["per_class"]) == {"a", "b", "c"}
    assert scored["per_class"]["b"]["recall"] == pytest.approx(sk.recall_score(y, pred, average=None)[1])


def test_auc_is_null_when_the_data_holds_one_class():
    scored = evaluate.classification_metrics(np.zeros(10, int), np.full((10, 2), 0.5), [False, True], ["auc", "accuracy"])
    assert scored["metrics"] == {"auc": None, "accuracy": 1.0}


# -- MLflow ------------------------------------------------------------------------------------


def test_results_go_to_the_training_run_and_a_retry_adds_no_run(on_sqlite, snapshot, good_result):
    client = tracking.client()
    run_id = on_sqlite["good"]["run_id"]
    runs_before = len(client.search_runs([client.get_run(run_id).info.experiment_id]))
    evaluate.main(_args(snapshot, on_sqlite["good"]["model_uri"], mlflow_run_id=run_id))  # the retry

    run = client.get_run(run_id)
    metrics = run.data.metrics
    assert metrics["eval_auc"] == pytest.approx(good_result["metrics"]["auc"])
    assert metrics["eval_recall_class_True"] == pytest.approx(good_result["per_class"]["True"]["recall"])
    assert metrics["eval_support_class_False"] == good_result["per_class"]["False"]["support"]
    assert {"eval_latency_p50_ms", "eval_latency_p95_ms", "eval_model_size_mb", "eval_log_loss"} <= set(metrics)
    assert run.data.tags["rayops.eval.snapshot_hash"] == snapshot["content_hash"]
    assert run.data.tags["rayops.eval.champion"] == "none"

    logged = json.loads(Path(client.download_artifacts(run_id, "evaluation.json")).read_text())
    assert logged["metrics"]["auc"] == pytest.approx(good_result["metrics"]["auc"])
    assert logged["per_class"] == good_result["per_class"]
    assert good_result["evaluation_uri"] == f"runs:/{run_id}/evaluation.json"
    assert [a.path for a in client.list_artifacts(run_id) if a.path == "evaluation.json"] == ["evaluation.json"]
    assert len(client.search_runs([run.info.experiment_id])) == runs_before


# -- wrong input -------------------------------------------------------------------------------


def test_unknown_metric_names_are_refused_with_the_known_ones(snapshot):
    with pytest.raises(JobInputError) as err:
        evaluate.main(_args(snapshot, "models:/m-whatever", metrics=["auc", "rocauc", "mape"]))
    message = str(err.value)
    assert "'rocauc', 'mape'" in message
    assert "accuracy, balanced_accuracy, auc, precision, recall, f1, log_loss" in message


def test_a_model_uri_with_nothing_there_is_named(on_sqlite, snapshot):
    with pytest.raises(JobInputError, match=r"model_uri.*models:/m-0123456789abcdef"):
        evaluate.main(_args(snapshot, "models:/m-0123456789abcdef"))


def test_a_snapshot_uri_with_nothing_there_is_named(on_sqlite, snapshot, tmp_path):
    with pytest.raises(JobInputError, match=f"snapshot_uri.*{tmp_path}/nothing"):
        evaluate.main(_args(snapshot, on_sqlite["good"]["model_uri"], snapshot_uri=f"file://{tmp_path}/nothing"))


def test_validation_rows_lacking_a_model_column_are_named(on_sqlite, snapshot, tmp_path):
    uri = f"file://{tmp_path}/snap"
    buf = io.BytesIO()
    pq.write_table(snapshot["validation"].drop_columns(["contract"]), buf)
    storage.write_snapshot(uri, files={"validation.parquet": buf.getvalue()}, manifest={"content_hash": "x"})
    with pytest.raises(JobInputError, match="column 'contract'"):
        evaluate.main(_args(snapshot, on_sqlite["good"]["model_uri"], snapshot_uri=uri))


def test_a_training_run_that_does_not_exist_is_named(on_sqlite, snapshot):
    with pytest.raises(JobInputError, match=r"mlflow_run_id.*'0000deadbeef'"):
        evaluate.main(_args(snapshot, on_sqlite["good"]["model_uri"], mlflow_run_id="0000deadbeef"))


# -- the champion, on a real MLflow server with S3 artifacts -----------------------------------


@pytest.fixture(scope="module")
def registry(mlflow_server, snapshot, checkpoints) -> Iterator[dict]:
    """The server holds the good and the bad model; `churn` has the good one as version 1, the bad as 2."""
    import mlflow

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(tracking.TRACKING_URI_ENV, mlflow_server)
        logged = {name: _log(folder, snapshot) for name, folder in checkpoints.items()}
        name = f"churn-{uuid.uuid4().hex[:6]}"
        for which in ("good", "bad"):
            mlflow.register_model(logged[which]["model_uri"], name)
        yield {"uri": mlflow_server, "name": name, **logged}


@pytest.fixture
def on_server(registry, monkeypatch) -> dict:
    monkeypatch.setenv(tracking.TRACKING_URI_ENV, registry["uri"])
    return registry


def _set_champion(registry: dict, version: int) -> None:
    tracking.client().set_registered_model_alias(registry["name"], "champion", str(version))


def test_the_champion_is_scored_on_the_same_rows_and_a_better_challenger_gains(on_server, snapshot):
    _set_champion(on_server, 2)  # the bad model serves
    result = evaluate.main(_args(snapshot, on_server["good"]["model_uri"], registered_model=on_server["name"]))
    champion = result["champion"]
    assert champion["version"] == "2" and champion["run_id"] == on_server["bad"]["run_id"]
    assert champion["model_uri"] == f"models:/{on_server['name']}/2"
    assert champion["same_as_candidate"] is False and champion["error"] is None
    assert set(champion["per_class"]) == {"False", "True"}
    assert champion["latency"]["p95_ms"] > 0 and champion["model_size_mb"] > 0
    assert sum(v["support"] for v in champion["per_class"].values()) == result["rows"]
    assert result["champion_absent_reason"] is None
    gain = result["gain_over_champion"]
    assert gain["auc"] == pytest.approx(result["metrics"]["auc"] - champion["metrics"]["auc"]) and gain["auc"] > 0.1
    assert (
        gain["log_loss"] == pytest.approx(champion["metrics"]["log_loss"] - result["metrics"]["log_loss"])
        and gain["log_loss"] > 0
    )


def test_a_worse_challenger_shows_a_negative_gain_against_the_same_champion_numbers(on_server, snapshot):
    _set_champion(on_server, 1)  # the good model serves
    worse = evaluate.main(_args(snapshot, on_server["bad"]["model_uri"], registered_model=on_server["name"]))
    assert worse["champion"]["version"] == "1"
    assert worse["gain_over_champion"]["auc"] < -0.1
    # the champion's numbers are those the good model gets as a candidate: same code, same rows
    as_candidate = evaluate.main(_args(snapshot, on_server["good"]["model_uri"]))
    assert worse["champion"]["metrics"] == pytest.approx(as_candidate["metrics"])


def test_a_champion_that_is_the_candidate_says_so(on_server, snapshot):
    _set_champion(on_server, 1)
    result = evaluate.main(_args(snapshot, on_server["good"]["model_uri"], registered_model=on_server["name"]))
    assert result["champion"]["same_as_candidate"] is True
    assert result["champion"]["metrics"] == result["metrics"]
    assert all(gain == 0.0 for gain in result["gain_over_champion"].values() if gain is not None)


def test_a_registered_model_without_the_alias_means_no_champion(on_server, snapshot):
    result = evaluate.main(
        _args(
            snapshot,
            on_server["good"]["model_uri"],
            registered_model=on_server["name"],
            champion_alias="nobody",
            latency={"batches": 1},
        )
    )
    assert result["champion"] is None
    assert result["champion_absent_reason"] == f"registered model {on_server['name']!r} has no version with alias 'nobody'"


# -- the way production runs it ----------------------------------------------------------------


def test_the_job_runs_as_a_module_and_reports_its_result(on_sqlite, snapshot):
    good = on_sqlite["good"]
    args = _args(snapshot, good["model_uri"], mlflow_run_id=good["run_id"], metrics=["auc", "recall"], latency={"batches": 3})
    env = {**os.environ, JOB_ARGS_ENV: json.dumps(args), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "airflow_provider_rayops.jobs.evaluate"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = parse_result(proc.stdout)
    assert list(result["metrics"]) == ["auc", "recall"] and result["metrics"]["auc"] > 0.6
    assert result["mlflow_run_id"] == good["run_id"]


def test_the_job_reports_wrong_input_as_one_line(snapshot):
    env = {**os.environ, JOB_ARGS_ENV: json.dumps(_args(snapshot, "models:/m-x", metrics=["nope"])), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "airflow_provider_rayops.jobs.evaluate"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "rayops job input error: job argument metrics=['nope']: unknown metric(s) 'nope'; known metrics: "
        "accuracy, balanced_accuracy, auc, precision, recall, f1, log_loss, rmse, mae, r2, mape"
    ]


# -- regression --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def delivery(tmp_path_factory) -> dict:
    """The delivery-times set (a fractional target: inferred regression) and two tiny regressors."""
    folder = tmp_path_factory.mktemp("eval-delivery")
    data = delivery_snapshot(folder, rows=600, seed=SEED)
    return {
        "snapshot": data,
        "good": fit_tiny_model(data, folder=folder / "good", steps=300),
        "bad": fit_tiny_model(data, folder=folder / "bad", steps=300, invert=True),
    }


def test_regression_metrics_match_scikit_learn():
    import sklearn.metrics as sk

    rng = np.random.default_rng(3)
    y = rng.normal(50.0, 10.0, size=300)
    y[:5] = 0.0  # mape skips rows whose target is 0, as a percentage of 0 is undefined
    pred = y + rng.normal(0.0, 3.0, size=300)
    got = evaluate.regression_metrics(y, pred, ["rmse", "mae", "r2", "mape"])
    assert got["rmse"] == pytest.approx(sk.root_mean_squared_error(y, pred))
    assert got["mae"] == pytest.approx(sk.mean_absolute_error(y, pred))
    assert got["r2"] == pytest.approx(sk.r2_score(y, pred))
    assert got["mape"] == pytest.approx(sk.mean_absolute_percentage_error(y[5:], pred[5:]))
    constant = evaluate.regression_metrics(np.zeros(4), np.ones(4), ["r2", "mape"])
    assert constant == {"r2": None, "mape": None}  # undefined, never a made-up number


def test_a_regression_model_is_scored_in_the_targets_units_with_its_default_metrics(on_sqlite, delivery):
    snapshot = delivery["snapshot"]
    args = {"snapshot_uri": snapshot["snapshot_uri"], "latency": FAST_LATENCY}
    good = evaluate.main({**args, "model_uri": f"file://{delivery['good']}"})
    bad = evaluate.main({**args, "model_uri": f"file://{delivery['bad']}"})
    assert (good["task"], good["classes"], good["positive_class"], good["per_class"]) == ("regression", [], None, {})
    assert good["metric_directions"] == {"rmse": "min", "mae": "min", "r2": "max"}
    truth = snapshot["validation"].column("delivery_minutes").to_numpy()
    assert good["metrics"]["rmse"] < 0.5 * truth.std()  # minutes, not standardised units
    assert good["metrics"]["r2"] > 0.7 and bad["metrics"]["r2"] < 0
    assert bad["metrics"]["rmse"] > 2 * good["metrics"]["rmse"]
    assert good["latency"]["p95_ms"] > 0


def test_classification_metrics_asked_of_a_regression_model_are_refused_by_name(on_sqlite, delivery):
    args = {
        "snapshot_uri": delivery["snapshot"]["snapshot_uri"],
        "model_uri": f"file://{delivery['good']}",
        "metrics": ["rmse", "auc"],
    }
    with pytest.raises(JobInputError) as caught:
        evaluate.main(args)
    assert str(caught.value) == (
        "evaluate.metrics 'auc': the model is a regression model (the snapshot's task kind); use rmse, mae, r2, mape, "
        "or set train.task if ingest inferred the wrong kind"
    )


def test_a_lower_error_is_a_gain_and_the_gates_read_error_metrics_as_ceilings():
    from airflow_provider_rayops.registry.gates import evaluate_gates

    gain = evaluate.gain_over_champion({"rmse": 5.0, "r2": 0.8}, {"metrics": {"rmse": 7.0, "r2": 0.7}})
    assert gain == pytest.approx({"rmse": 2.0, "r2": 0.1})
    evaluation = {
        "task": "regression",
        "metrics": {"rmse": 5.0, "r2": 0.8},
        "champion": {"version": "3"},
        "gain_over_champion": gain,
    }
    gates = [{"metric": "rmse", "max": 6.0}, {"metric": "rmse", "min_gain_over_champion": 1.0}, {"metric": "rmse", "max": 4.0}]
    results = evaluate_gates(gates, evaluation)
    assert [(r.name, r.passed, r.detail) for r in results] == [
        ("rmse <= 6", True, "5 <= 6 (margin 1)"),
        ("rmse gain over champion >= 1", True, "gain +2 over champion v3; 2 >= 1 (margin 1)"),
        ("rmse <= 4", False, "5 > 4 by 1"),
    ]
    [per_class] = evaluate_gates([{"per_class": "recall", "min": 0.5}], evaluation)
    assert (per_class.passed, per_class.detail) == (False, "a regression model has no classes")


def test_the_predictions_on_the_validation_split_are_written_as_the_endpoint_answers_them(tmp_path, snapshot, on_sqlite):
    """The monitor's prediction drift compares live answers with these: the same columns as the inference log."""
    from airflow_provider_rayops.jobs.modeling.mlflow_model import predictions_frame

    model_uri = on_sqlite["good"]["model_uri"]
    result = evaluate.main(_args(snapshot, model_uri, predictions_folder=f"file://{tmp_path}/run"))
    assert result["predictions_uri"] == f"file://{tmp_path}/run/validation_predictions.parquet"
    written = pq.read_table(tmp_path / "run" / "validation_predictions.parquet")
    expected = predictions_frame(evaluate.load_model(model_uri).predictor, snapshot["validation"])
    assert written.column_names == ["prediction", "probability_False", "probability_True"]
    assert written.num_rows == snapshot["validation"].num_rows
    assert written.to_pandas().equals(expected)
