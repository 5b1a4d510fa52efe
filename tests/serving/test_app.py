"""The Serve application on the session's real Ray head, deployed through the Serve REST API.

Two versions of one registered model on the session's real MLflow server: v1 the weak model, v2
the strong one (tests/registry/models.py). The replicas load them as `models:/<name>/<version>`
over HTTP from the server, as a deployed app does.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import numpy as np
import pytest
import requests

from airflow_provider_rayops.jobs.modeling import load_predictor
from airflow_provider_rayops.serving.app import pick_version
from airflow_provider_rayops.serving.config import applications
from tests.fixtures.mlflow import tracking_at
from tests.fixtures.network import free_port
from tests.registry.models import mlflow_registry, registry_snapshot, trained, unique_name

PIPELINE = "served"
PREFIX = "/served"


def _config(registered_model: str, tracking_uri: str, port: int, weights: dict[str, float]) -> dict:
    return {
        "http_options": {"host": "127.0.0.1", "port": port},
        "applications": applications(
            pipeline=PIPELINE,
            registered_model=registered_model,
            weights=weights,
            route_prefix=PREFIX,
            batch={"max_batch_size": 8, "wait_ms": 2},
            replicas={"min": 1, "max": 1, "num_cpus": 0.25},
            limits={"max_rows": 100, "max_body_bytes": 64 * 1024},
            sticky_header="X-Request-Key",
            runtime_env={"env_vars": {"MLFLOW_TRACKING_URI": tracking_uri}},
        ),
    }


class Serve:
    """The session head's Serve REST API and the app's HTTP endpoint."""

    def __init__(self, ray_head, port: int) -> None:
        self.api = ray_head.dashboard_url.rstrip("/") + "/api/serve/applications/"
        self.headers = ray_head.client().endpoint.headers()
        self.url = f"http://127.0.0.1:{port}{PREFIX}"

    def put(self, config: dict) -> None:
        r = requests.put(self.api, json=config, headers=self.headers, timeout=60)
        assert r.status_code == 200, r.text

    def apps(self) -> dict:
        r = requests.get(self.api, headers=self.headers, timeout=30)
        r.raise_for_status()
        return r.json()["applications"]

    def wait_running(self, timeout: float = 240) -> dict:
        """Every application RUNNING; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            apps = self.apps()
            if apps and all(a.get("status") == "RUNNING" for a in apps.values()):
                return apps
            failed = {name: a.get("message") for name, a in apps.items() if a.get("status") == "DEPLOY_FAILED"}
            assert not failed, failed
            assert time.monotonic() < deadline, {name: a.get("status") for name, a in apps.items()}
            time.sleep(1)

    def replica_ids(self) -> dict[str, list[str]]:
        """Per application and deployment, its replicas' ids."""
        return {
            f"{app}/{name}": sorted(r["replica_id"] for r in d["replicas"])
            for app, a in self.apps().items()
            for name, d in a["deployments"].items()
        }

    def predict(self, body: dict | bytes, **headers: str) -> requests.Response:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        return requests.post(self.url + "/", data=data, headers={"Content-Type": "application/json", **headers}, timeout=60)


@pytest.fixture(scope="module")
def served(ray_head, mlflow_registry, trained) -> Iterator[dict]:
    import mlflow

    name = unique_name("served")
    with tracking_at(mlflow_registry.tracking_uri):
        for which in ("weak", "strong"):  # v1, v2
            mlflow.register_model(trained[which].model_uri, name)
        predictors = {v: load_predictor(f"models:/{name}/{v}") for v in ("1", "2")}
    port = free_port()
    serve = Serve(ray_head, port)
    config = _config(name, mlflow_registry.tracking_uri, port, {"2": 1})  # the strong model serves
    serve.put(config)
    serve.wait_running()
    snapshot = mlflow_registry.snapshot
    rows = snapshot["validation"].slice(0, 20).drop(["churned"])
    try:
        yield {
            "serve": serve,
            "name": name,
            "tracking_uri": mlflow_registry.tracking_uri,
            "port": port,
            "predictors": predictors,
            "rows": rows,
        }
    finally:
        requests.delete(serve.api, headers=serve.headers, timeout=60)


def _records(rows) -> list[dict]:
    return rows.to_pylist()


def test_a_request_is_answered_by_the_weighted_version_with_its_predictions(served):
    serve, rows = served["serve"], served["rows"]
    response = serve.predict({"dataframe_records": _records(rows)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["version"] == "2"  # the only version deployed
    expected = served["predictors"]["2"]
    assert [p["prediction"] for p in body["predictions"]] == expected.predict(rows).tolist()
    np.testing.assert_allclose(
        [p["probability_True"] for p in body["predictions"]], expected.predict_proba(rows)[:, 1], rtol=1e-5
    )
    # the same rows in MLflow's other shape, at the path `mlflow models serve` uses
    split = {"dataframe_split": {"columns": rows.column_names, "data": [list(r.values()) for r in _records(rows)]}}
    again = requests.post(serve.url + "/invocations", json=split, timeout=60)
    assert again.status_code == 200 and again.json()["predictions"] == body["predictions"]


def test_bad_requests_are_4xx_with_the_reason_and_never_reach_a_model(served):
    serve, rows = served["serve"], served["rows"]
    record = _records(rows.slice(0, 1))[0]
    cases = [
        (b'{"dataframe_records": [', 400, "malformed JSON"),
        ({"dataframe_records": [{**record, "churned": True}]}, 400, "unknown column(s) ['churned']"),
        ({"dataframe_records": [{k: v for k, v in record.items() if k != "plan"}]}, 400, "missing column(s) ['plan']"),
        ({"dataframe_records": [{**record, "monthly_charges": "a lot"}]}, 400, "column 'monthly_charges' row 0"),
        ({"dataframe_records": [record] * 101}, 400, "101 rows in one request; the limit is 100"),
        ({"dataframe_records": [record] * 400}, 413, "the limit is 65536"),
    ]
    for body, status, reason in cases:
        response = serve.predict(body)
        assert (response.status_code, reason in response.json()["error"]) == (status, True), response.text
    plain = requests.post(serve.url + "/", data=b"a,b", headers={"Content-Type": "text/csv"}, timeout=30)
    assert plain.status_code == 415
    assert requests.get(serve.url + "/nowhere", timeout=30).status_code == 404


def test_the_health_route_answers_with_the_weights(served):
    response = requests.get(served["serve"].url + "/-/healthz", timeout=30)
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "pipeline": "served",
        "champion": "2",
        "weights": {"2": 1.0},
        "versions": {"2": "ready"},
    }


def test_a_canary_joins_and_takes_weight_without_restarting_the_champion(served):
    """Version 1 is added as its own application at weight 0, then given half the traffic: the
    champion's replicas and the router's are the same ones throughout."""
    serve, rows = served["serve"], served["rows"]
    before = serve.replica_ids()
    with_canary = _config(served["name"], served["tracking_uri"], served["port"], {"2": 1, "1": 0})
    serve.put(with_canary)
    serve.wait_running()
    after_add = serve.replica_ids()
    assert {k: v for k, v in after_add.items() if k in before} == before  # champion and router untouched
    assert "served--v1/Model" in after_add
    assert {serve.predict({"dataframe_records": _records(rows.slice(0, 1))}).json()["version"] for _ in range(10)} == {"2"}

    with_canary["applications"][0]["deployments"][0]["user_config"]["weights"] = {"2": 1, "1": 1}
    serve.put(with_canary)
    deadline = time.monotonic() + 60
    while requests.get(serve.url + "/-/healthz", timeout=30).json()["weights"] != {"2": 1.0, "1": 1.0}:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    assert serve.replica_ids() == after_add  # reconfigured, not restarted

    record = {"dataframe_records": _records(rows.slice(0, 1))}
    # a request key always lands on the same version; keys spread over both by weight
    by_key = {
        key: {serve.predict(record, **{"X-Request-Key": key}).json()["version"] for _ in range(3)} for key in map(str, range(30))
    }
    assert all(len(versions) == 1 for versions in by_key.values())
    observed = {key: versions.pop() for key, versions in by_key.items()}
    assert set(observed.values()) == {"1", "2"}, observed
    assert observed == {key: pick_version({"2": 1.0, "1": 1.0}, key) for key in observed}  # the router's own rule
    # each version answers with its own model
    for version in ("1", "2"):
        key = next(k for k, v in observed.items() if v == version)
        body = serve.predict({"dataframe_records": _records(rows)}, **{"X-Request-Key": key}).json()
        assert body["version"] == version
        expected = served["predictors"][version].predict_proba(rows)[:, 1]
        np.testing.assert_allclose([p["probability_True"] for p in body["predictions"]], expected, rtol=1e-5)
