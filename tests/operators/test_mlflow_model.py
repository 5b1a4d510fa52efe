"""Register, approve and promote through Airflow's dag.test() against a real MLflow server.

The models are real (tiny, trained here: tests/registry/models.py), the evaluations are the real
evaluate job's results against the registered champion, and the MLflow server runs on 127.0.0.1
with its artifacts on the S3 endpoint. Each DAG stands for the promotion part of the lifecycle
DAG: an `evaluate` task handing over the evaluate job's XCom, then register -> [approve] -> promote.

Approval goes through Airflow's real HITL path: the ApprovalOperator parks its task in
`awaiting_input`, and an approver answers through Airflow's own REST API (the core API app,
in this process, on the same metadata DB: GET .../hitlDetails to find the request, PATCH
.../taskInstances/{task}/{map_index}/hitlDetails to answer, as the UI does), authenticated with
a JWT of a named user, so `responded_by_user` is what Airflow records.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from typing import Any

import pytest
from airflow.sdk import DAG, task

from airflow_provider_rayops import tag_names as names
from airflow_provider_rayops.operators.mlflow_model import (
    ApproveModelVersionOperator,
    GateFailed,
    PromoteMLflowModelOperator,
    RegisterMLflowModelOperator,
)
from airflow_provider_rayops.registry import audit, version_tags
from tests.fixtures.airflow_db import run_dag_test
from tests.registry.models import CONN_ID, mlflow_registry, registry_snapshot, trained, unique_name

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
# Every kind of gate, with bounds the strong model passes and the bad one fails.
GATES = [
    {"metric": "auc", "min": 0.6},
    {"metric": "auc", "min_gain_over_champion": 0.0},
    {"per_class": "recall", "min": 0.1},
    {"latency_p95_ms": 5000},
    {"max_model_size_mb": 50},
]


def _dag(
    name: str,
    evaluation: dict,
    *,
    gates=GATES,
    approval: bool = False,
    on_gate_failure: str = "skip",
    register_cls=RegisterMLflowModelOperator,
    **register_kw,
) -> DAG:
    with DAG(f"rayops_test_{name}", schedule=None, start_date=START, catchup=False) as dag:

        @task
        def evaluate() -> dict:  # stands in for the evaluate Ray job: its result, as XCom
            return evaluation

        register = register_cls(
            task_id="register", registered_model=name, evaluation=evaluate(), gates=gates, mlflow_conn_id=CONN_ID,
            on_gate_failure=on_gate_failure, **register_kw,
        )  # fmt: skip
        approve = None
        if approval:
            approve = ApproveModelVersionOperator(
                task_id="approve", registered_model=name, registration=register.output, mlflow_conn_id=CONN_ID,
                response_timeout=dt.timedelta(minutes=5),  # a deployment's bound (dag.test() does not apply it)
            )  # fmt: skip
        promote = PromoteMLflowModelOperator(
            task_id="promote", registered_model=name, version=register.output, approval=approve.output if approve else None,
            mlflow_conn_id=CONN_ID,
        )  # fmt: skip
        if approve is not None:
            register >> approve >> promote
        else:
            register >> promote
    return dag


def _tis(run) -> dict[str, Any]:
    return {ti.task_id: ti for ti in run.get_task_instances()}


def _aliases(registry, name: str) -> dict[str, str]:
    return dict(registry.client().get_registered_model(name).aliases)


# -- the lifecycle: first model, a better one, a worse one ---------------------------------------


@pytest.fixture(scope="module")
def lifecycle(airflow_db, mlflow_registry, trained) -> dict[str, Any]:
    """Three pipeline runs into one registered model: weak (first), strong (better), bad (worse);
    each evaluated against the champion of the moment, as the evaluate job does."""
    name = unique_name("lifecycle")
    out: dict[str, Any] = {"name": name}
    for step in ("weak", "strong", "bad"):
        evaluation = mlflow_registry.evaluate(trained[step], registered_model=name)
        run = run_dag_test(_dag(name, evaluation))
        out[step] = {"evaluation": evaluation, "run": run, "tis": _tis(run), "aliases": _aliases(mlflow_registry, name)}
    return out


def test_a_first_model_passes_the_champion_gate_by_rule_and_becomes_champion(lifecycle, mlflow_registry):
    first = lifecycle["weak"]
    assert first["evaluation"]["champion"] is None
    assert first["run"].state == "success"
    registration = first["tis"]["register"].xcom_pull(task_ids="register")
    assert registration["version"] == "1" and registration["passed"] and registration["created"]
    gain = next(g for g in registration["gates"] if g["kind"] == "min_gain_over_champion")
    assert gain["passed"] and "passes by rule" in gain["detail"]
    assert first["aliases"] == {"champion": "1"}  # no deploy stage: promoted at once, challenger consumed
    tags = mlflow_registry.client().get_model_version(lifecycle["name"], "1").tags
    assert tags[names.APPROVAL] == "policy" and tags[names.POLICY_HASH] == registration["policy_hash"]
    assert tags[names.REPLACED_VERSION] == ""


def test_a_better_challenger_becomes_champion_and_the_old_champion_keeps_previous(lifecycle, mlflow_registry):
    better = lifecycle["strong"]
    assert better["evaluation"]["champion"]["version"] == "1"
    assert better["evaluation"]["gain_over_champion"]["auc"] > 0
    assert better["run"].state == "success"
    promoted = better["tis"]["promote"].xcom_pull(task_ids="promote")
    assert (promoted["version"], promoted["previous_version"], promoted["changed"]) == ("2", "1", True)
    assert better["aliases"] == {"champion": "2", "previous": "1"}
    tags = mlflow_registry.client().get_model_version(lifecycle["name"], "2").tags
    assert tags[names.REPLACED_VERSION] == "1" and tags[names.GATES_PASSED] == "true"


def test_a_worse_challenger_fails_its_gates_the_run_skips_promotion_and_the_champion_stays(lifecycle, mlflow_registry):
    worse = lifecycle["bad"]
    assert worse["run"].state == "success"  # not an error state for the DAG
    assert (worse["tis"]["register"].state, worse["tis"]["promote"].state) == ("skipped", "skipped")
    assert worse["aliases"] == {"champion": "2", "previous": "1"}
    registration = worse["tis"]["register"].xcom_pull(task_ids="register", key="registration")
    assert registration["version"] == "3" and not registration["passed"]
    assert "auc >= 0.6" in registration["failed"] and "auc gain over champion >= 0" in registration["failed"]
    tags = mlflow_registry.client().get_model_version(lifecycle["name"], "3").tags
    assert tags[names.GATES_PASSED] == "false"
    assert tags["rayops.gate.0"].startswith("FAIL auc >= 0.6: ") and " < 0.6 by " in tags["rayops.gate.0"]
    assert "over champion v2" in tags["rayops.gate.1"]
    assert names.APPROVAL not in tags


def test_each_version_has_a_description_a_person_can_read(lifecycle, mlflow_registry):
    version = mlflow_registry.client().get_model_version(lifecycle["name"], "3")
    text = version.description
    assert text.startswith(f"{lifecycle['name']}: registered from training run ")
    assert "Trained by Airflow DAG churn run manual__2026-01-01T00:00:00+00:00-bad (try 1)" in text
    assert "Data: file://" in text and "Pipeline config cfg-bad-1a2b3c at git 0123456789" in text
    assert "Compared with champion v2 on the same rows." in text
    assert "Gates: FAILED" in text and "- FAIL auc >= 0.6: " in text


def test_the_register_task_links_to_the_version_in_the_mlflow_ui(lifecycle, mlflow_registry):
    ti = lifecycle["strong"]["tis"]["register"]
    expected = f"{mlflow_registry.tracking_uri}/#/models/{lifecycle['name']}/versions/2"
    assert ti.xcom_pull(task_ids="register", key="mlflow_model_version")["url"] == expected
    assert ti.xcom_pull(task_ids="register", key="_link_MlflowModelVersionLink") == expected
    assert ti.xcom_pull(task_ids="register")["model_version_url"] == expected


# -- one behaviour each ----------------------------------------------------------------------------


def test_a_per_class_floor_breach_fails_the_run_when_configured_to(airflow_db, mlflow_registry, trained, lifecycle):
    """The weak model passes on AUC but finds too few of the churners: the fairness floor stops it."""
    name = unique_name("fairness")
    evaluation = lifecycle["weak"]["evaluation"]
    worst = evaluation["per_class"]["True"]["recall"]
    assert worst < 0.4 < evaluation["per_class"]["False"]["recall"] and evaluation["metrics"]["auc"] > 0.6
    failures: list[BaseException] = []
    gates = [{"metric": "auc", "min": 0.6}, {"per_class": "recall", "min": 0.4}]
    dag = _dag(
        name,
        evaluation,
        gates=gates,
        on_gate_failure="fail",
        retries=2,
        on_failure_callback=lambda ctx: failures.append(ctx["exception"]),
    )
    run = run_dag_test(dag)
    tis = _tis(run)
    assert run.state == "failed" and tis["register"].state == "failed" and tis["register"].try_number == 1  # GateFailed: no retry
    (error,) = failures
    assert isinstance(error, GateFailed) and [r.name for r in error.failed] == ["recall of every class >= 0.4"]
    assert error.failed[0].value == pytest.approx(worst) and f"class 'True' {worst:.4g} < 0.4 by {0.4 - worst:.4g}" in str(error)
    tags = mlflow_registry.client().get_model_version(name, "1").tags
    assert tags[names.GATES_FAILED] == "recall of every class >= 0.4"
    assert _aliases(mlflow_registry, name) == {}


def test_a_retried_register_task_does_not_create_a_second_version(airflow_db, mlflow_registry, trained, lifecycle, monkeypatch):
    name = unique_name("retry")
    real = version_tags.record_gate_results
    calls = []

    def crash_once(*args, **kwargs):  # the worker dies after the version exists, before its gate tags
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("worker lost")
        return real(*args, **kwargs)

    monkeypatch.setattr(version_tags, "record_gate_results", crash_once)
    dag = _dag(name, lifecycle["strong"]["evaluation"], retries=1, retry_delay=dt.timedelta(0))
    run = run_dag_test(dag)
    register = _tis(run)["register"]
    assert (run.state, register.state, register.try_number) == ("success", "success", 2)
    registration = register.xcom_pull(task_ids="register")
    assert registration["version"] == "1" and registration["created"] is False  # found, not created again
    versions = mlflow_registry.client().search_model_versions(f"name = '{name}'")
    assert [v.version for v in versions] == ["1"]
    assert versions[0].tags[names.GATES_PASSED] == "true"
    assert _aliases(mlflow_registry, name) == {"champion": "1"}


# -- approval by a person --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def airflow_api(airflow_db):
    """Airflow's core REST API (the app the api-server runs), in this process, on the test DB."""
    from airflow.api_fastapi.app import create_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    app = create_app(apps="core")
    client = TestClient(app)

    def token_for(username: str) -> str:
        return app.state.auth_manager.generate_jwt(SimpleAuthManagerUser(username=username, role="admin"))

    client.token_for = token_for  # type: ignore[attr-defined]
    return client


class _Approver(threading.Thread):
    """A person answering the approval form through the REST API once the task waits for input.

    dag.test() waits for a human-in-the-loop answer without end (it applies no response_timeout),
    so an approver that cannot answer fails the run's unfinished tasks: the test then reports why
    instead of hanging the suite. Each request is retried until the deadline: the API shares a
    SQLite file with dag.test()'s loop, and a write can meet "database is locked" under load.
    """

    def __init__(self, api, dag_id: str, *, user: str, choice: str, comment: str, timeout: float = 180.0) -> None:
        super().__init__(daemon=True)
        self.api, self.dag_id, self.choice, self.comment, self.timeout = api, dag_id, choice, comment, timeout
        self.headers = {"Authorization": f"Bearer {api.token_for(user)}"}
        self.request: dict[str, Any] | None = None  # what the approver saw
        self.answer: dict[str, Any] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        deadline, last = time.monotonic() + self.timeout, "no approval request yet"
        while time.monotonic() < deadline:
            try:
                if self._answer_once():
                    return
            except Exception as exc:  # a transient API or database error: tried again until the deadline
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.5)
        self.error = TimeoutError(f"could not answer the approval request of {self.dag_id} within {self.timeout}s ({last})")
        self._end_the_run()

    def _answer_once(self) -> bool:
        found = self.api.get(
            f"/api/v2/dags/{self.dag_id}/dagRuns/~/hitlDetails", params={"response_received": False}, headers=self.headers
        )
        if found.status_code == 404:  # dag.test() has not stored the DAG yet: a race, not an error
            return False
        found.raise_for_status()
        pending = found.json()["hitl_details"]
        if not pending:
            return False
        self.request = pending[0]
        ti = self.request["task_instance"]
        path = (
            f"/api/v2/dags/{self.dag_id}/dagRuns/{ti['dag_run_id']}/taskInstances/{ti['task_id']}/{ti['map_index']}/hitlDetails"
        )
        response = self.api.patch(
            path, json={"chosen_options": [self.choice], "params_input": {"comment": self.comment}}, headers=self.headers
        )
        response.raise_for_status()
        self.answer = response.json()
        return True

    def _end_the_run(self) -> None:
        from airflow.models import TaskInstance
        from airflow.utils.session import create_session
        from airflow.utils.state import State, TaskInstanceState

        for _ in range(20):  # the same lock may be in the way: tried for a while, then left to pytest's timeout
            try:
                with create_session() as session:
                    unfinished = session.query(TaskInstance).filter(
                        TaskInstance.dag_id == self.dag_id, TaskInstance.state.notin_(list(State.finished))
                    )
                    unfinished.update({TaskInstance.state: TaskInstanceState.FAILED}, synchronize_session=False)
                return
            except Exception:
                time.sleep(1)


def _approved_run(mlflow_registry, airflow_api, name: str, evaluation: dict, *, choice: str, comment: str, user: str):
    dag = _dag(name, evaluation, approval=True)
    approver = _Approver(airflow_api, dag.dag_id, user=user, choice=choice, comment=comment)
    approver.start()
    run = run_dag_test(dag)
    approver.join(timeout=10)
    assert approver.error is None, approver.error
    return run, approver


@pytest.fixture(scope="module")
def approved(airflow_db, mlflow_registry, trained, airflow_api) -> dict[str, Any]:
    name = unique_name("approved")
    evaluation = mlflow_registry.evaluate(trained["strong"], registered_model=name)
    run, approver = _approved_run(
        mlflow_registry, airflow_api, name, evaluation, choice="Approve", comment="AUC up, recall floor met", user="alice"
    )
    return {"name": name, "run": run, "approver": approver, "tis": _tis(run)}


def test_an_approved_version_is_promoted_with_the_approvers_name_and_comment(approved, mlflow_registry):
    assert approved["run"].state == "success"
    assert {k: ti.state for k, ti in approved["tis"].items()} == {
        "evaluate": "success",
        "register": "success",
        "approve": "success",
        "promote": "success",
    }
    assert approved["approver"].answer["responded_by"] == {"id": "alice", "name": "alice"}
    decision = approved["tis"]["approve"].xcom_pull(task_ids="approve")  # ApprovalOperator's own XCom
    assert decision["chosen_options"] == ["Approve"] and decision["responded_by_user"] == {"id": "alice", "name": "alice"}
    assert approved["tis"]["promote"].xcom_pull(task_ids="promote")["approval"] == {
        "decision": "approved",
        "by": "alice",
        "comment": "AUC up, recall floor met",
    }
    tags = mlflow_registry.client().get_model_version(approved["name"], "1").tags
    assert (tags[names.APPROVAL], tags[names.APPROVED_BY], tags[names.APPROVAL_COMMENT]) == (
        "approved",
        "alice",
        "AUC up, recall floor met",
    )
    assert tags[names.APPROVED_AT].startswith(str(dt.date.today().year))
    assert _aliases(mlflow_registry, approved["name"]) == {"champion": "1"}


def test_the_approval_form_shows_the_gate_table_and_asks_for_a_comment(approved):
    request = approved["approver"].request
    assert request["subject"] == f"Promote {approved['name']} v1 to champion?"
    assert request["options"] == ["Approve", "Reject"]
    assert "| gate | value | bound | result | detail |" in request["body"]
    assert "| auc >= 0.6 |" in request["body"] and "passed every gate" in request["body"]
    assert set(request["params"]) == {"comment"}


def test_a_rejected_version_is_not_promoted_and_the_champion_stays(airflow_db, mlflow_registry, trained, airflow_api, lifecycle):
    name = unique_name("rejected")
    client = mlflow_registry.client()
    # A serving champion first (the weak model, promoted by policy), then the strong one rejected.
    run_dag_test(_dag(name, mlflow_registry.evaluate(trained["weak"], registered_model=name)))
    evaluation = mlflow_registry.evaluate(trained["strong"], registered_model=name)
    run, _ = _approved_run(
        mlflow_registry, airflow_api, name, evaluation, choice="Reject", comment="wait for the Q3 data", user="bob"
    )
    tis = _tis(run)
    assert run.state == "success" and (tis["approve"].state, tis["promote"].state) == ("success", "skipped")
    assert _aliases(mlflow_registry, name) == {"champion": "1"}  # and no challenger: v2 no longer waits
    tags = client.get_model_version(name, "2").tags
    assert (tags[names.APPROVAL], tags[names.APPROVED_BY], tags[names.APPROVAL_COMMENT]) == (
        "rejected",
        "bob",
        "wait for the Q3 data",
    )


# -- the audit question ----------------------------------------------------------------------------


def test_why_a_version_serves_is_answered_from_mlflow_alone(approved, mlflow_registry, trained):
    """Given only the registered model name and the serving alias: data, config, Airflow run, gates, approver."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_registry.tracking_uri)  # nothing from Airflow
    serving = client.get_model_version_by_alias(approved["name"], "champion")
    tags = serving.tags
    strong = trained["strong"]
    assert tags["rayops.snapshot_uri"] == mlflow_registry.snapshot["snapshot_uri"]
    assert tags["rayops.snapshot_hash"] == mlflow_registry.snapshot["content_hash"]
    assert (tags["rayops.config_hash"], tags["rayops.config_git_commit"]) == (
        "cfg-strong-1a2b3c",
        "0123456789abcdef0123456789abcdef01234567",
    )
    assert (tags["rayops.dag_id"], tags["rayops.run_id"], tags["rayops.try_number"]) == (
        "churn",
        "manual__2026-01-01T00:00:00+00:00-strong",
        "1",
    )
    assert tags["rayops.ray_job_id"] == "rayops-churn--train.fit--strong-1" and serving.run_id == strong.run_id
    assert tags[names.REGISTERED_BY].startswith(f"rayops_test_{approved['name']}/")
    assert tags[names.GATES_PASSED] == "true" and len(version_tags.gate_results_of(serving)) == len(GATES)
    assert (tags[names.APPROVED_BY], tags[names.APPROVAL_COMMENT]) == ("alice", "AUC up, recall floor met")
    record = audit.audit_record(client, approved["name"], alias="champion")
    assert record["approval"]["by"] == "alice" and record["snapshot_hash"] == tags["rayops.snapshot_hash"]
    assert all(g["passed"] for g in record["gates"]) and "gates_uri" not in record
