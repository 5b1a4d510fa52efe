"""DeployRayServeOperator on the session's real Ray head and MLflow server, run by dag.test().

One story, in order, with a client looping on the endpoint from the moment the first deploy
ends and counting every request that does not come back 200:

1. v1 (weak) is the first deploy: it serves at 100%;
2. v2 (strong) goes through a good canary (50% -> 100%, each step held): it serves, v1 is gone;
3. v3 (a broken copy of v2: its encoder reads a column the request does not have, so every
   prediction fails) goes through a canary that breaches at its first step and rolls back by
   itself: v2 serves again, v3's application is gone;
4. load makes Serve add a second replica of v2;
5. `rayops rollback` puts v1 (the previous alias) back at 100% and swaps the aliases;
6. the factory's `<pipeline>__rollback` DAG, triggered with Param version=2, puts v2 back.

Each deploy runs register -> deploy -> champion, as the factory wires it, so the aliases move only
after a deploy that ended serving.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_rayops import cli
from airflow_provider_rayops import tag_names as names
from airflow_provider_rayops.config.loader import load_config_dir
from airflow_provider_rayops.factory.dags import build_rollback_dag
from airflow_provider_rayops.hooks.ray_serve_api import RayServeClient
from airflow_provider_rayops.operators.mlflow_model import PromoteMLflowModelOperator, RegisterMLflowModelOperator
from airflow_provider_rayops.operators.serve import OUTCOME_XCOM_KEY, ROLLBACK_VERSION_PARAM, DeployRayServeOperator
from tests.fixtures.airflow_db import run_dag_test
from tests.fixtures.mlflow import tracking_at
from tests.fixtures.network import free_port
from tests.registry.models import mlflow_registry, registry_snapshot, trained, unique_name

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
APP = "deployed"
PIPELINE = "deployedpipe"
PREFIX = "/deployed"
CANARY = {"steps": [50, 100], "hold": "2s", "max_error_rate": 0.05, "min_requests": 3, "on_breach": "fail"}
REPLICAS = {"min": 1, "max": 2, "num_cpus": 0.25, "upscale_delay_s": 1.0, "look_back_period_s": 3.0}
# Serve's handles and replicas report load every 10 s by default: the scale-up would take a minute.
SERVE_ENV = {
    "RAY_SERVE_HANDLE_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
    "RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S": "1",
}


class Client(threading.Thread):
    """Loops on the endpoint (a few threads' worth of requests at a time) and keeps every answer."""

    def __init__(self, url: str, body: dict, *, threads: int = 2) -> None:
        super().__init__(daemon=True)
        self.url, self.body, self.threads = url, json.dumps(body).encode(), threads
        self.answers: list[tuple[float, int, str]] = []  # (time, status, version or error)
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def _loop(self, done: threading.Event | None = None) -> None:
        session = requests.Session()
        while not self.stop.is_set() and not (done is not None and done.is_set()):
            try:
                r = session.post(self.url + "/", data=self.body, headers={"Content-Type": "application/json"}, timeout=30)
                what = r.json().get("version", "") if r.status_code == 200 else r.text[:300]
                answer = (time.monotonic(), r.status_code, str(what))
            except requests.RequestException as exc:
                answer = (time.monotonic(), 0, f"{type(exc).__name__}: {exc}")
            with self._lock:
                self.answers.append(answer)

    def run(self) -> None:
        workers = [threading.Thread(target=self._loop, daemon=True) for _ in range(self.threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    def more(self, threads: int) -> threading.Event:
        """`threads` more loops, until the returned event is set."""
        done = threading.Event()
        for _ in range(threads):
            threading.Thread(target=self._loop, args=(done,), daemon=True).start()
        return done

    def failures(self) -> list[tuple[float, int, str]]:
        with self._lock:
            return [a for a in self.answers if a[1] != 200]

    def versions(self, since: float = 0.0, until: float = float("inf")) -> Counter:
        with self._lock:
            return Counter(v for t, status, v in self.answers if status == 200 and since <= t <= until)


def _broken_copy(model_uri: str, folder: Path) -> Path:
    """The logged model at `model_uri`, with its encoder reading `monthly_charges` as a column
    named `monthly_charges_usd`: it loads, its signature is the original's, every prediction fails."""
    import mlflow

    local = Path(mlflow.artifacts.download_artifacts(model_uri, dst_path=str(folder / "download")))
    broken = folder / "broken"
    shutil.copytree(local, broken)
    encoder_file = broken / "artifacts" / "model" / "encoder.json"
    encoder = json.loads(encoder_file.read_text())
    renamed = [c for c in encoder["columns"] if c["name"] == "monthly_charges"]
    assert renamed, [c["name"] for c in encoder["columns"]]
    renamed[0]["name"] = "monthly_charges_usd"
    encoder_file.write_text(json.dumps(encoder))
    return broken


def register_broken_copy(mlflow_registry, trained, folder: Path) -> str:
    """`trained["strong"]`'s model logged again as a broken copy (`_broken_copy`) on the same run: its models:/ URI."""
    with tracking_at(mlflow_registry.tracking_uri):
        broken = _broken_copy(trained["strong"].model_uri, folder)
        client = mlflow_registry.client()
        strong_run = client.get_run(trained["strong"].run_id)
        logged = client.create_logged_model(strong_run.info.experiment_id, name="broken", source_run_id=strong_run.info.run_id)
        client.log_model_artifacts(logged.model_id, str(broken))
        client.finalize_logged_model(logged.model_id, "READY")
        return f"models:/{logged.model_id}"


def _dag(dag_id: str, *, name: str, evaluation: dict, mlflow_conn_id: str, compute: dict, port: int, log_uri: str):
    from airflow.sdk import DAG

    with DAG(dag_id, schedule=None, start_date=START, catchup=False) as dag:
        register = RegisterMLflowModelOperator(
            task_id="register", registered_model=name, evaluation=evaluation, gates=[], mlflow_conn_id=mlflow_conn_id
        )
        deploy = DeployRayServeOperator(
            task_id="serve",
            registered_model=name,
            version=register.output,
            app=APP,
            route_prefix=PREFIX,
            compute=compute,
            mlflow_conn_id=mlflow_conn_id,
            replicas=REPLICAS,
            batch={"max_batch_size": 8, "wait_ms": 2},
            http_port=port,
            canary=CANARY,
            inference_log={"uri": log_uri, "sample": 1.0},
            runtime_env={"env_vars": SERVE_ENV},
            deferrable=True,
            ready_timeout=240,
        )
        champion = PromoteMLflowModelOperator(
            task_id="champion", registered_model=name, version=register.output, mlflow_conn_id=mlflow_conn_id
        )
        register >> deploy >> champion
    return dag


def _pipeline_config(folder: Path, *, name: str, conn_id: str, port: int) -> Path:
    """A pipeline file whose deploy section is what the story's operators were given (so a rollback
    changes weights, not the running versions' config), for `rayops rollback` and the rollback DAG.
    The storage root is the project folder: the inference log lands where the operators sent it."""
    folder.mkdir(parents=True)
    (folder / "defaults.yaml").write_text(
        f"compute: local\ncompute_profiles: {{local: {{backend: local}}}}\nstorage: {{root: 'file://{folder.parent}'}}\n"
        "security: {job_env_vars: ['RAY_SERVE_*']}\n"  # the platform lets pipelines tune Serve
    )
    (folder / f"{PIPELINE}.yaml").write_text(
        "\n".join([
            f"pipeline: {PIPELINE}",
            "data: {source: file://data/churn.parquet, target: churned}",
            "train: {entrypoint: rayops.builtin:tabular_mlp}",
            "evaluate: {}",
            f"promote: {{registered_model: {name}}}",
            f"tracking: {{conn_id: {conn_id}}}",
            "deploy:",
            f"  app: {APP}",
            f"  route_prefix: {PREFIX}",
            f"  http_port: {port}",
            "  max_batch_size: 8",
            "  batch_wait_ms: 2",
            "  replicas: " + json.dumps(REPLICAS),
            "runtime_env: {env_vars: " + json.dumps(SERVE_ENV) + "}",
            "",
        ])
    )  # fmt: skip
    return folder


def _aliases(client, name: str) -> dict[str, str]:
    return {alias: str(v) for alias, v in client.get_registered_model(name).aliases.items()}


def _tis(run) -> dict[str, Any]:
    return {ti.task_id: ti for ti in run.get_task_instances()}


@pytest.fixture(scope="module")
def story(airflow_db, ray_head, mlflow_registry, trained, tmp_path_factory) -> Iterator[dict[str, Any]]:
    name = unique_name("deployed")
    folder = tmp_path_factory.mktemp("deploy")
    broken_uri = register_broken_copy(mlflow_registry, trained, folder)
    port = free_port()
    serve = RayServeClient(ray_head.endpoint)
    url = f"http://127.0.0.1:{port}{PREFIX}"
    rows = mlflow_registry.snapshot["validation"].slice(0, 2).drop(["churned"]).to_pylist()
    out: dict[str, Any] = {"name": name, "url": url, "runs": {}, "aliases": {}, "apps": {}, "seconds": {}, "since": {}}
    out["log_uri"] = f"file://{folder}/inference/{PIPELINE}"

    def deploy(step: str, evaluation: dict) -> None:
        dag = _dag(
            f"deploy_{step}_{name}".replace("-", "_"),
            name=name,
            evaluation=evaluation,
            mlflow_conn_id=mlflow_registry.conn_id,
            compute=ray_head.compute,
            port=port,
            log_uri=out["log_uri"],
        )
        started = time.monotonic()
        out["runs"][step] = run_dag_test(dag)
        out.setdefault("until", {})[step] = time.monotonic()
        out["seconds"][step] = round(time.monotonic() - started, 1)
        out["aliases"][step] = _aliases(mlflow_registry.client(), name)
        out["apps"][step] = sorted(serve.details()["applications"])
        out["since"][step] = started

    client = Client(url, {"dataframe_records": rows})
    try:
        deploy("first", mlflow_registry.evaluate(trained["weak"], registered_model=name))
        client.start()
        time.sleep(1)
        deploy("good", mlflow_registry.evaluate(trained["strong"], registered_model=name))
        # Load: more clients than one replica's target of 8 ongoing requests, until Serve adds a
        # replica of v2; the bad canary comes and goes meanwhile (Serve's metrics take seconds).
        load = client.more(14)
        scale_started = time.monotonic()
        bad = mlflow_registry.evaluate(trained["strong"], registered_model=name)
        deploy("bad", {**bad, "model_uri": broken_uri})
        deadline = time.monotonic() + 120
        replicas: list = []
        while time.monotonic() < deadline:
            app = serve.details()["applications"].get(f"{APP}--v2", {})
            replicas = [
                r for d in app.get("deployments", {}).values() for r in d.get("replicas", []) if r.get("state") == "RUNNING"
            ]
            if len(replicas) >= 2:
                break
            time.sleep(1)
        out["replicas_under_load"] = len(replicas)
        out["seconds"]["scale_up"] = round(time.monotonic() - scale_started, 1)
        time.sleep(2)  # requests go on while the new replica takes its share
        load.set()

        config_dir = _pipeline_config(folder / "dag_configs", name=name, conn_id=mlflow_registry.conn_id, port=port)
        started = time.monotonic()
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            out["cli"] = cli.main(["--config-dir", str(config_dir), "rollback", PIPELINE])
        out["cli_output"] = printed.getvalue()
        out["seconds"]["cli"] = round(time.monotonic() - started, 1)
        out["aliases"]["cli"] = _aliases(mlflow_registry.client(), name)
        out["apps"]["cli"] = sorted(serve.details()["applications"])
        out["since"]["cli_done"] = time.monotonic()

        (loaded,) = load_config_dir(config_dir).pipelines
        rollback_dag = build_rollback_dag(loaded)
        out["rollback_dag"] = rollback_dag
        out["runs"]["rollback"] = run_dag_test(rollback_dag, run_conf={ROLLBACK_VERSION_PARAM: "2"})
        out["aliases"]["rollback"] = _aliases(mlflow_registry.client(), name)
        out["apps"]["rollback"] = sorted(serve.details()["applications"])
        client.stop.set()
        time.sleep(0.5)
        out["client"] = client
        yield out
    finally:
        client.stop.set()
        requests.delete(
            ray_head.dashboard_url.rstrip("/") + "/api/serve/applications/", headers=ray_head.endpoint.headers(), timeout=60
        )


def test_no_client_request_failed_through_canaries_rollbacks_and_a_scale_up(story):
    client = story["client"]
    assert len(client.answers) > 100, len(client.answers)
    assert client.failures() == []
    assert story["replicas_under_load"] == 2


def test_the_first_deploy_serves_the_version_at_100_percent_and_it_becomes_champion(story):
    run = story["runs"]["first"]
    assert run.state == "success"
    result = _tis(run)["serve"].xcom_pull(task_ids="serve")
    assert result["outcome"] == "serving" and result["version"] == "1"
    assert result["weights"] == {"1": 100.0} and result["steps"] == []
    assert result["endpoint"] == story["url"]
    assert story["aliases"]["first"] == {"champion": "1"}
    assert story["apps"]["first"] == [APP, f"{APP}--v1"]


def test_a_good_canary_goes_through_each_step_and_replaces_the_champion(story, mlflow_registry):
    run = story["runs"]["good"]
    assert run.state == "success"
    result = _tis(run)["serve"].xcom_pull(task_ids="serve")
    assert result["outcome"] == "serving" and result["replaced_version"] == "1"
    assert [s["percent"] for s in result["steps"]] == [50.0, 100.0]
    assert all(s["breach"] is None and s["requests"] >= 3 and s["errors"] == 0 for s in result["steps"])
    assert story["aliases"]["good"] == {"champion": "2", "previous": "1"}
    assert story["apps"]["good"] == [APP, f"{APP}--v2"]
    seen = story["client"].versions(since=story["since"]["good"])
    assert seen["1"] > 0 and seen["2"] > 0  # both answered while the canary ran
    tags = mlflow_registry.client().get_model_version(story["name"], "1").tags  # v1's last deploy: `rayops rollback`
    assert tags[names.DEPLOY_OUTCOME] == "serving" and tags[names.DEPLOYED_BY].startswith("rayops rollback (")
    assert json.loads(tags[names.DEPLOY_WEIGHTS]) == {"1": 100.0} and tags[names.DEPLOY_ENDPOINT] == story["url"]


def test_a_bad_canary_rolls_back_by_itself_and_the_champion_keeps_serving(story, mlflow_registry):
    run = story["runs"]["bad"]
    tis = _tis(run)
    assert tis["serve"].state == "failed"
    assert tis["champion"].state == "upstream_failed"  # the aliases did not move
    outcome = tis["serve"].xcom_pull(task_ids="serve", key=OUTCOME_XCOM_KEY)
    assert outcome["outcome"] == "rolled_back" and outcome["version"] == "3"
    assert outcome["weights"] == {"2": 100.0}
    (step,) = outcome["steps"]
    assert step["percent"] == 50.0 and step["errors"] == step["requests"] >= 3
    assert "over canary.max_error_rate" in step["breach"]
    assert story["aliases"]["bad"] == {"champion": "2", "previous": "1"}
    assert story["apps"]["bad"] == [APP, f"{APP}--v2"]
    during = story["client"].versions(since=story["since"]["bad"], until=story["until"]["bad"])
    assert set(during) == {"2"}  # v3's failures were answered by v2
    tags = mlflow_registry.client().get_model_version(story["name"], "3").tags
    assert tags[names.DEPLOY_OUTCOME] == "rolled_back"
    assert [s["percent"] for s in json.loads(tags[names.DEPLOY_STEPS])] == [50.0]
    assert tags[names.DEPLOYED_BY].startswith(f"deploy_bad_{story['name'].replace('-', '_')}/")


def test_rayops_rollback_puts_the_previous_version_back_and_swaps_the_aliases(story):
    assert story["cli"] == 0
    printed = story["cli_output"]  # the operator's log lines, then the result as indented JSON
    result = json.loads(printed[printed.rfind("\n{\n") + 1 :])
    assert result["version"] == "1" and result["outcome"] == "serving" and result["replaced_version"] == "2"
    assert result["weights"] == {"1": 100.0}
    assert story["aliases"]["cli"] == {"champion": "1", "previous": "2"}
    assert story["apps"]["cli"] == [APP, f"{APP}--v1"]


def test_the_rollback_dag_serves_the_version_its_param_names(story):
    dag = story["rollback_dag"]
    assert dag.dag_id == f"{PIPELINE}__rollback" and set(dag.params) == {ROLLBACK_VERSION_PARAM}
    run = story["runs"]["rollback"]
    assert run.state == "success"
    result = _tis(run)["rollback"].xcom_pull(task_ids="rollback")
    assert result["version"] == "2" and result["weights"] == {"2": 100.0}
    assert story["aliases"]["rollback"] == {"champion": "2", "previous": "1"}
    assert story["apps"]["rollback"] == [APP, f"{APP}--v2"]
    assert story["client"].versions(since=story["since"]["cli_done"])["1"] > 0  # v1 answered in between


def test_each_version_wrote_a_sample_of_what_it_served_with_its_predictions(story):
    """The replicas of v1 and v2 wrote parts as they served (every row: sample 1.0); v3 answered
    nothing, so it logged nothing. A replica flushes what it holds when Serve stops it."""
    import pyarrow.dataset as ds

    folder = Path(story["log_uri"][len("file://") :])
    parts = sorted(folder.glob("*.parquet"))
    assert parts, f"no inference log parts under {folder}"
    table = ds.dataset([str(p) for p in parts], format="parquet").to_table()
    assert {"tenure_months", "plan", "prediction", "probability_True", "rayops_version", "rayops_served_at"} <= set(
        table.column_names
    )
    logged = Counter(table.column("rayops_version").to_pylist())
    assert set(logged) <= {"1", "2"} and logged["2"] > 0
    answered = story["client"].versions()
    assert sum(logged.values()) <= 2 * sum(answered.values())  # two rows per answered request, at most
    assert not list(folder.glob(".*"))  # no half-written part left behind
