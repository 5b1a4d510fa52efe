"""The model artifact contract without Ray: features, checkpoints, predictors, device metrics."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from airflow_provider_rayops.jobs import builtin, modeling
from airflow_provider_rayops.jobs.datasets import make_churn

MANIFEST = {
    "target": "churned",
    "features": ["tenure_months", "monthly_charges", "support_calls", "total_charges", "plan", "contract", "paperless_billing"],
    "columns": [
        {"name": "tenure_months", "kind": "numeric"},
        {"name": "monthly_charges", "kind": "numeric"},
        {"name": "support_calls", "kind": "numeric"},
        {"name": "total_charges", "kind": "numeric"},
        {"name": "plan", "kind": "categorical"},
        {"name": "contract", "kind": "categorical"},
        {"name": "paperless_billing", "kind": "bool"},
        {"name": "churned", "kind": "bool"},
    ],
    "categories": {"plan": ["basic", "premium", "standard"], "contract": ["month-to-month", "one-year", "two-year"]},
}


@pytest.fixture(scope="module")
def table() -> pa.Table:
    return make_churn(500, seed=3)


@pytest.fixture(scope="module")
def encoder(table) -> modeling.FeatureEncoder:
    return modeling.FeatureEncoder.fit(MANIFEST, table)


def test_numeric_columns_are_standardised_with_the_train_statistics(encoder, table):
    x = encoder.transform(table)
    assert x.dtype == np.float32 and x.shape == (500, 11)
    np.testing.assert_allclose(x[:, :4].mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(x[:, :4].std(axis=0), 1.0, atol=1e-4)


def test_fitting_batch_by_batch_gives_the_encoder_of_the_whole_table(encoder, table):
    """A train split larger than memory is fitted a batch at a time: same statistics, any batch size."""
    for rows in (1, 37, 499):
        streamed = modeling.FeatureEncoder.fit(MANIFEST, table.to_batches(max_chunksize=rows))
        for whole, part in zip(encoder.columns, streamed.columns, strict=True):
            assert (part.name, part.kind, part.categories) == (whole.name, whole.kind, whole.categories)
            assert part.mean == pytest.approx(whole.mean, rel=1e-9) and part.std == pytest.approx(whole.std, rel=1e-9)
    # Regression targets and numeric classes are learnt across batches too.
    manifest = {"target": "y", "features": ["x"], "columns": [{"name": "x", "kind": "numeric"}, {"name": "y", "kind": "numeric"}]}
    rows = pa.table({"x": [1.0, 2.0, 3.0, 4.0], "y": [3, 9, 5, 3]})
    assert modeling.FeatureEncoder.fit(manifest, rows.to_batches(max_chunksize=1)).classes == [3, 5, 9]
    regression = modeling.FeatureEncoder.fit({**manifest, "task": "regression"}, rows.to_batches(max_chunksize=3))
    assert (regression.target.mean, regression.target.std) == pytest.approx((5.0, np.std([3, 9, 5, 3])))


def test_a_numeric_columns_statistics_skip_nulls_nan_and_infinities():
    manifest = {"target": "y", "features": ["x"], "columns": [{"name": "x", "kind": "numeric"}, {"name": "y", "kind": "bool"}]}
    rows = pa.table({"x": [1.0, None, float("nan"), float("inf"), 3.0], "y": [True, False, True, False, True]})
    column = modeling.FeatureEncoder.fit(manifest, rows).columns[0]
    assert (column.mean, column.std) == pytest.approx((2.0, 1.0))


def test_categories_are_one_hot_in_manifest_order_and_unknown_or_null_values_are_all_zero(encoder):
    rows = [
        {
            "tenure_months": 3,
            "monthly_charges": 50.0,
            "support_calls": 1,
            "total_charges": 150.0,
            "plan": "premium",
            "contract": "gold",
            "paperless_billing": True,
        },
        {
            "tenure_months": None,
            "monthly_charges": None,
            "support_calls": 1,
            "total_charges": None,
            "plan": None,
            "contract": "one-year",
            "paperless_billing": None,
        },
    ]
    x = encoder.transform(rows)
    names = encoder.feature_names
    assert names[4:10] == [
        "plan=basic",
        "plan=premium",
        "plan=standard",
        "contract=month-to-month",
        "contract=one-year",
        "contract=two-year",
    ]
    assert x[0, 4:10].tolist() == [0, 1, 0, 0, 0, 0]
    assert x[1, 4:10].tolist() == [0, 0, 0, 0, 1, 0]
    assert x[1, 0] == 0.0 and x[1, 10] == 0.0  # a null number is the mean; a null flag is false


def test_the_encoder_survives_json_and_reads_tables_dataframes_and_dicts_alike(encoder, table):
    again = modeling.FeatureEncoder.from_json(json.loads(json.dumps(encoder.to_json())))
    assert again == encoder
    expected = encoder.transform(table)
    np.testing.assert_array_equal(again.transform(table.to_pandas()), expected)
    np.testing.assert_array_equal(again.transform(table.to_pydict()), expected)


def test_a_missing_column_is_named(encoder, table):
    with pytest.raises(modeling.FeatureMismatch, match="column 'plan': missing from the rows"):
        encoder.transform(table.drop_columns(["plan"]))


def test_the_target_becomes_class_indices(encoder, table):
    assert encoder.classes == [False, True]
    np.testing.assert_array_equal(
        encoder.encode_target(table), table.column("churned").to_numpy(zero_copy_only=False).astype(int)
    )


def test_a_fractional_numeric_target_is_refused_for_classification():
    manifest = {"target": "y", "features": ["x"], "columns": [{"name": "x", "kind": "numeric"}, {"name": "y", "kind": "numeric"}]}
    with pytest.raises(modeling.FeatureMismatch, match=r"target has fractional values .* set train.task: regression"):
        modeling.FeatureEncoder.fit(manifest, pa.table({"x": [1.0, 2.0], "y": [0.5, 1.5]}))


REGRESSION = {
    "target": "y",
    "task": "regression",
    "features": ["x"],
    "columns": [{"name": "x", "kind": "numeric"}, {"name": "y", "kind": "numeric"}],
}


def test_a_regression_target_is_standardised_and_decoded_back_through_json():
    train = pa.table({"x": [1.0, 2.0, 3.0, 4.0], "y": [10.0, 20.0, 30.0, 40.0]})
    encoder = modeling.FeatureEncoder.from_json(json.dumps(modeling.FeatureEncoder.fit(REGRESSION, train).to_json()))
    assert (encoder.task, encoder.classes, encoder.num_outputs) == ("regression", [], 1)
    labels = encoder.encode_target(train)
    assert labels.dtype == np.float32
    np.testing.assert_allclose(labels, (np.array([10, 20, 30, 40]) - 25.0) / np.std([10, 20, 30, 40]), rtol=1e-6)
    np.testing.assert_allclose(encoder.decode_target(labels), [10.0, 20.0, 30.0, 40.0], rtol=1e-6)
    with pytest.raises(modeling.FeatureMismatch, match="column 'y': target has 1 null, NaN or infinite value"):
        encoder.encode_target(pa.table({"y": [1.0, None]}))


def test_a_regression_predictor_gives_values_in_the_targets_units_and_no_probabilities():
    train = pa.table({"x": [float(i) for i in range(50)], "y": [3.0 * i + 7.0 for i in range(50)]})
    encoder = modeling.FeatureEncoder.fit(REGRESSION, train)
    model = modeling.TabularMLP(encoder.num_features, encoder.num_outputs, hidden_sizes=[], dropout=0.0)
    with torch.no_grad():  # a linear model with exactly the standardised relation: y_std = x_std
        model.net[0].weight.fill_(1.0)
        model.net[0].bias.fill_(0.0)
    predictor = modeling.Predictor(model=model, encoder=encoder, source="test")
    np.testing.assert_allclose(predictor.predict({"x": [10.0, 20.0]}), [37.0, 67.0], rtol=1e-5)
    with pytest.raises(TypeError, match="is a regression model: it predicts values"):
        predictor.predict_proba({"x": [1.0]})


def test_an_integer_target_predicts_integers_not_strings():
    manifest = {"target": "y", "features": ["x"], "columns": [{"name": "x", "kind": "numeric"}, {"name": "y", "kind": "numeric"}]}
    encoder = modeling.FeatureEncoder.fit(manifest, pa.table({"x": [0.0, 1.0, 2.0], "y": [3, 5, 9]}))
    model = modeling.TabularMLP(encoder.num_features, encoder.num_outputs, hidden_sizes=[], dropout=0.0)
    predicted = modeling.Predictor(model=model, encoder=encoder, source="test").predict({"x": [0.0, 2.0]})
    assert predicted.dtype == np.int64 and set(predicted.tolist()) <= {3, 5, 9}


def test_a_checkpoint_round_trips_weights_encoder_state_and_optimizer(encoder, table, tmp_path):
    spec = modeling.ModelSpec(modeling.TabularMLP.MODEL_CLASS, {"num_features": 11, "num_classes": 2, "hidden_sizes": [8]})
    model = spec.build()
    optimizer = torch.optim.AdamW(model.parameters())
    x = torch.from_numpy(encoder.transform(table))
    model(x).sum().backward()
    optimizer.step()  # the optimizer now holds state worth restoring (step count, moments)
    modeling.save_checkpoint(
        tmp_path,
        model=model,
        encoder=encoder,
        model_spec=spec,
        optimizer=optimizer,
        state={"epoch": 3, "history": [{"epoch": 3, "val_auc": 0.8}]},
    )
    loaded = modeling.load_checkpoint(tmp_path, with_optimizer=True)
    assert loaded.epoch == 3 and loaded.encoder == encoder and loaded.optimizer_state is not None
    restored = torch.optim.AdamW(loaded.model.parameters())
    restored.load_state_dict(loaded.optimizer_state["optimizer"])
    saved_state, restored_state = optimizer.state_dict(), restored.state_dict()
    assert restored_state["param_groups"] == saved_state["param_groups"]
    assert saved_state["state"]  # not an empty state round-tripping trivially
    for index, values in saved_state["state"].items():
        for name, value in values.items():
            torch.testing.assert_close(restored_state["state"][index][name], value)
    model.eval()
    torch.testing.assert_close(loaded.model(x), model(x))
    predictor = modeling.load_predictor(f"file://{tmp_path}")
    np.testing.assert_allclose(predictor.predict_proba(table), torch.softmax(model(x), 1).detach().numpy(), rtol=1e-5)


def test_one_binary_logit_gives_two_class_probabilities():
    proba = modeling.probabilities(np.array([0.0, 2.0]), 2)
    np.testing.assert_allclose(proba[:, 1], [0.5, 1 / (1 + np.exp(-2.0))])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_the_device_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    scores = np.round(rng.random(400), 1)  # many ties
    labels = (rng.random(400) < scores).astype(np.int64)
    ours = builtin.roc_auc(torch.from_numpy(scores), torch.from_numpy(labels)).item()
    assert ours == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
