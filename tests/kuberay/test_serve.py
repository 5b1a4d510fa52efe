"""DeployRayServeOperator on the kuberay backend: the endpoint is a RayService whose serveConfigV2
the canary updates, against the simulated Kubernetes API and KubeRay (tests/fixtures/kube_api.py).

Simulated: the API server (each RayService is checked against KubeRay's CRD) and KubeRay's
RayService controller, which applies serveConfigV2 in place to the session's real Ray head and
reports Serve's application and deployment statuses and the Ready condition. Real: Airflow
(dag.test(), the canary holds deferred), the cncf-kubernetes hook, MLflow, Ray Serve, the
replicas loading the registered versions, and a client sending requests the whole time.

One story: v1 is the first deploy; v2, a broken copy of the strong model, goes through a canary
that breaches at its first step (50%) and rolls back by itself. (The good canary's path is the same
rollout code, proven step by step on the local backend in tests/serving/test_deploy.py.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import yaml

from airflow_provider_rayops.backends.kuberay.manifests import RAYSERVICES, service_name
from airflow_provider_rayops.hooks.ray_serve_api import RayServeClient
from airflow_provider_rayops.operators.serve import OUTCOME_XCOM_KEY
from airflow_provider_rayops.serving.config import ROUTER
from tests.fixtures import kuberay_crds
from tests.fixtures.airflow_db import run_dag_test
from tests.fixtures.helm import chart_grants, helm
from tests.fixtures.kube_api import rbac_needs
from tests.fixtures.mlflow import tracking_at
from tests.fixtures.network import free_port
from tests.registry.models import mlflow_registry, registry_snapshot, trained, unique_name
from tests.serving.test_deploy import APP, PREFIX, Client, _dag, _tis, register_broken_copy

NAMESPACE = "serving"
# The app's name as the story in tests/serving/test_deploy.py has it, on a RayService of its own.
SERVICE = service_name(APP)


def _profile(conn_id: str, serve_url: str) -> dict[str, Any]:
    return {
        "backend": "kuberay",
        "conn_id": conn_id,
        "namespace": NAMESPACE,
        "image": "ghcr.io/acme/rayops:0.1.0",
        "head": {"cpu": 2, "memory": "8Gi"},
        "worker_groups": [{"name": "cpu", "replicas": {"min": 1, "max": 3}, "cpu": 4, "memory": "8Gi"}],
        "serve_url": serve_url,
    }


def _router_weights(spec: dict[str, Any]) -> dict[str, float]:
    config = yaml.safe_load(spec["serveConfigV2"])
    (app,) = [a for a in config["applications"] if a["name"] == APP]
    (router,) = [d for d in app["deployments"] if d["name"] == ROUTER]
    weights = {str(v): float(w) for v, w in router["user_config"]["weights"].items()}
    total = sum(weights.values())
    return {v: w / total for v, w in weights.items()}  # shares: the router takes weights in any unit


@pytest.fixture(scope="module")
def story(airflow_db, ray_head, mlflow_registry, trained, simulated_kuberay, tmp_path_factory) -> Iterator[dict[str, Any]]:
    name = unique_name("kuberay_served")
    folder = tmp_path_factory.mktemp("kuberay-serve")
    broken_uri = register_broken_copy(mlflow_registry, trained, folder)
    # The simulated cluster is the session head: its Serve proxy keeps the port it started with.
    running = RayServeClient(ray_head.endpoint).details()
    port = int((running.get("http_options") or {}).get("port") or 0) if running["applications"] else free_port()
    profile = _profile(simulated_kuberay.conn_id, f"http://127.0.0.1:{port}")
    rows = mlflow_registry.snapshot["validation"].slice(0, 2).drop(["churned"]).to_pylist()
    out: dict[str, Any] = {"runs": {}, "name": name, "port": port}
    asked_from = len(simulated_kuberay.api.requests)
    with pytest.MonkeyPatch.context() as env:
        env.setenv(f"AIRFLOW_CONN_{simulated_kuberay.conn_id.upper()}", simulated_kuberay.api.connection_env())
        env.setenv("RAYOPS_KUBERAY_TOKEN", ray_head.endpoint.token or "")

        def deploy(step: str, evaluation: dict) -> None:
            dag = _dag(f"kuberay_deploy_{step}_{name}", name=name, evaluation=evaluation, mlflow_conn_id=mlflow_registry.conn_id,
                       compute=profile, port=port, log_uri=f"file://{folder}/inference")  # fmt: skip
            out["runs"][step] = run_dag_test(dag)
            out.setdefault("history", {})[step] = len(
                simulated_kuberay.api.spec_history.get((RAYSERVICES, NAMESPACE, SERVICE), [])
            )

        requests_client = Client(f"http://127.0.0.1:{port}{PREFIX}", {"dataframe_records": rows})
        try:
            deploy("first", mlflow_registry.evaluate(trained["weak"], registered_model=name))
            requests_client.start()
            bad = mlflow_registry.evaluate(trained["strong"], registered_model=name)
            deploy("bad", {**bad, "model_uri": broken_uri})
            requests_client.stop.set()
            requests_client.join(timeout=30)
            out["client"] = requests_client
            out["specs"] = simulated_kuberay.api.spec_history[(RAYSERVICES, NAMESPACE, SERVICE)]
            out["final"] = simulated_kuberay.api.get(RAYSERVICES, NAMESPACE, SERVICE)
            out["rbac_needs"] = rbac_needs(simulated_kuberay.api.requests[asked_from:])
            yield out
        finally:
            requests_client.stop.set()
            with contextlib.suppress(Exception):
                from airflow_provider_rayops.backends.kuberay.client import KubeRayClient

                KubeRayClient(simulated_kuberay.conn_id, NAMESPACE).delete(RAYSERVICES, SERVICE)
            # Serve shut down on the session head, as tests/serving/test_deploy.py leaves it: the next
            # module starts it on a port of its own (Serve keeps the port it started with).
            requests.delete(
                ray_head.dashboard_url.rstrip("/") + "/api/serve/applications/", headers=ray_head.endpoint.headers(), timeout=60
            )


def test_the_endpoint_is_one_rayservice_the_api_server_accepts_with_the_profiles_cluster(story):
    final = story["final"]
    kuberay_crds.validate({k: v for k, v in final.items() if k != "status"})
    assert final["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["maxReplicas"] == 3
    assert final["spec"]["upgradeStrategy"] == {"type": "NewCluster"}
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in final["status"]["conditions"])


def test_the_first_deploy_writes_v1_into_serve_config_v2_and_serves_it(story):
    first = _tis(story["runs"]["first"])["serve"]
    assert first.state == "success"
    assert first.xcom_pull(task_ids="serve")["outcome"] == "serving"
    assert _router_weights(story["specs"][0]) == {"1": 1.0}
    config = yaml.safe_load(story["specs"][0]["serveConfigV2"])
    assert sorted(a["name"] for a in config["applications"]) == [APP, f"{APP}--v1"]


def test_a_bad_canary_rolls_the_rayservice_back_to_the_champion_by_itself(story):
    bad = _tis(story["runs"]["bad"])
    assert bad["serve"].state == "failed"
    assert bad["champion"].state == "upstream_failed"
    result = bad["serve"].xcom_pull(task_ids="serve", key=OUTCOME_XCOM_KEY)
    assert (result["outcome"], result["weights"]) == ("rolled_back", {"1": 100.0})
    assert result["steps"][0]["percent"] == 50.0 and result["steps"][0]["breach"]
    # Each change was an update of serveConfigV2: v2 joined at weight 0, took 50%, then v1 alone again.
    during = [_router_weights(spec) for spec in story["specs"][story["history"]["first"] : story["history"]["bad"]]]
    assert during[0] == {"1": 1.0, "2": 0.0}
    assert {"1": 0.5, "2": 0.5} in during
    assert during[-1] == {"1": 1.0}
    config = yaml.safe_load(story["final"]["spec"]["serveConfigV2"])
    assert sorted(a["name"] for a in config["applications"]) == [APP, f"{APP}--v1"]


def test_no_client_request_failed_while_the_rayservice_changed(story):
    client = story["client"]
    failed = [a for a in client.answers if a[1] != 200]
    assert client.answers and failed == []
    assert "1" in set(client.versions())  # a request v2 failed was answered by the champion


def test_everything_the_deploys_asked_of_kubernetes_is_granted_by_the_charts_role(story, helm):
    granted = chart_grants(helm, NAMESPACE)
    assert story["rbac_needs"] <= granted, story["rbac_needs"] - granted
    assert ("patch", "rayservices") in story["rbac_needs"]  # the canary steps
