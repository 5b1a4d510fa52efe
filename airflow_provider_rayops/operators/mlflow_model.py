"""Registering, approving and promoting models in the MLflow model registry.

The promotion part of the lifecycle DAG, wired by the factory:

    evaluate -> register (RegisterMLflowModelOperator: new version, gates, challenger alias)
             -> [approve (ApproveModelVersionOperator: a person in the Airflow UI)]
             -> [deploy] -> promote (PromoteMLflowModelOperator: champion alias, previous kept)

Failing gates end the run as "skipped deploy": `register` raises AirflowSkipException, so
approve / deploy / promote are skipped and the champion keeps serving (`on_gate_failure="fail"`
raises `GateFailed` instead). A rejection in the approval form skips the rest the same way.
All the facts land on the model version as `rayops.*` tags (named in tag_names.py; registry/ writes them).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.sdk import BaseOperator, Param
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from airflow_provider_rayops import tag_names as names
from airflow_provider_rayops.hooks.mlflow import MlflowHook
from airflow_provider_rayops.links.mlflow import XCOM_KEY, MlflowModelVersionLink, link_xcom_value
from airflow_provider_rayops.registry import aliases, audit, registration, version_tags
from airflow_provider_rayops.registry import gates as gate_logic
from airflow_provider_rayops.registry.gates import GateResult

if TYPE_CHECKING:
    from airflow.sdk import Context
    from mlflow import MlflowClient

REGISTRATION_XCOM_KEY = "registration"
COMMENT_PARAM = "comment"


class GateFailed(AirflowFailException):
    """The model version failed promotion gates (with `on_gate_failure="fail"`). Not retried:
    a retry would judge the same numbers again."""

    def __init__(self, *, registered_model: str, version: str, failed: Sequence[GateResult]) -> None:
        self.registered_model = registered_model
        self.version = version
        self.failed = list(failed)
        reasons = "; ".join(f"{r.name}: {r.detail}" for r in self.failed)
        super().__init__(f"{registered_model} v{version} failed {len(self.failed)} gate(s): {reasons}")


class RegistrationInputError(ValueError):
    """The evaluation handed to the register task lacks what registration needs."""


def as_mapping(value: Any, *, what: str) -> dict[str, Any] | None:
    """A dict from an upstream task's result (an XComArg such as `task.output` resolves to it).

    Strings are refused: the factory passes results as typed values, and parsing a rendered
    template back into a dict is what config-as-data removed."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return dict(value)
    raise RegistrationInputError(
        f"{what} must be the upstream task's result as a dict (pass that task's `.output`), found {type(value).__name__}: {str(value)[:200]}"
    )


def version_of(value: Any) -> str:
    """A version number from an int, a string of digits, or the register task's result dict."""
    if isinstance(value, Mapping):
        value = value.get("version")
    text = str(value).strip() if value is not None else ""
    if not text.isdigit():
        raise RegistrationInputError(f"version must be a model version number, found {value!r}")
    return text


def _task_label(context: Context) -> str:
    ti = context["ti"]
    return f"{ti.dag_id}/{ti.run_id}/{ti.task_id} try {ti.try_number}"


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class RegisterMLflowModelOperator(BaseOperator):
    """Register the evaluated model as a new version, judge it by the gates, and on a pass give it
    the challenger alias.

    :param registered_model: MLflow registered model name (created if missing).
    :param evaluation: the evaluate job's result dict (the evaluate task's XCom: pass
        `evaluate_task.output`, or a template). It names the training run (`mlflow_run_id`) and
        its logged model (`model_uri`) that become the version. Templated.
    :param gates: the YAML's `evaluate.gates` as a list of dicts (see registry/gates.py).
    :param mlflow_conn_id: a `rayops_mlflow` connection; None: the embedded local store.
    :param challenger_alias: alias given to a version that passes every gate.
    :param on_gate_failure: "skip" (the task is skipped, and so is everything after it) or "fail"
        (`GateFailed`, no retry).

    The version carries the training run's lineage tags, a description a person can read, the
    gate results (one tag per gate, and the list as JSON in `rayops.gates`) and the policy hash. A retry reuses
    the version its first try registered. Returns, and pushes as XCom `registration` even when
    skipping: `{registered_model, version, created, passed, gates: [GateResult dicts], failed:
    [gate names], policy_hash, train_run_id, model_uri: "models:/<name>/<version>",
    model_version_url, challenger_alias: alias or None}`.
    """

    # Only upstream results are templated: names, aliases and gates come from pipeline YAML, and
    # config text never reaches Jinja.
    template_fields: Sequence[str] = ("evaluation",)
    template_fields_renderers = {"evaluation": "json"}
    operator_extra_links = (MlflowModelVersionLink(),)
    ui_color = "#d6f5e3"

    def __init__(
        self,
        *,
        registered_model: str,
        evaluation: Any,
        gates: Sequence[Mapping[str, Any]] | None = None,
        mlflow_conn_id: str | None = None,
        challenger_alias: str = "challenger",
        on_gate_failure: str = "skip",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if on_gate_failure not in ("skip", "fail"):
            raise ValueError(f"on_gate_failure must be 'skip' or 'fail', found {on_gate_failure!r}")
        self.registered_model = registered_model
        self.evaluation = evaluation
        self.gates = gates
        self.mlflow_conn_id = mlflow_conn_id
        self.challenger_alias = challenger_alias
        self.on_gate_failure = on_gate_failure

    def execute(self, context: Context) -> dict[str, Any]:
        evaluation = as_mapping(self.evaluation, what="evaluation")
        if evaluation is None:
            raise RegistrationInputError("evaluation is empty: the register task needs the evaluate task's result")
        run_id, model_uri = evaluation.get("mlflow_run_id"), evaluation.get("model_uri")
        if not run_id or not model_uri:
            raise RegistrationInputError(
                "the evaluation names no training run (mlflow_run_id) or logged model (model_uri); "
                f"found mlflow_run_id={run_id!r}, model_uri={model_uri!r}"
            )
        gates = gate_logic.normalize_gates(self.gates)
        results = gate_logic.evaluate_gates(gates, evaluation)
        passed = all(r.passed for r in results)
        ti = context["ti"]
        client = MlflowHook(self.mlflow_conn_id).get_conn()
        tracking_uri = client.tracking_uri
        lineage = version_tags.lineage_from_run(client, run_id)
        registered_by = _task_label(context)
        description = audit.describe_version(
            registered_model=self.registered_model,
            model_uri=model_uri,
            run_id=run_id,
            lineage=lineage,
            evaluation=evaluation,
            results=results,
            registered_by=registered_by,
        )
        tags = {
            **lineage,
            names.EVALUATION_URI: evaluation.get("evaluation_uri"),
            names.REGISTERED_BY: registered_by,
        }
        version, created = registration.register_version(
            client,
            registered_model=self.registered_model,
            model_uri=model_uri,
            run_id=run_id,
            tags=tags,
            description=description,
        )
        number = str(version.version)
        ti.xcom_push(key=XCOM_KEY, value=link_xcom_value(tracking_uri, self.registered_model, number))
        self.log.info(
            "%s %s v%s from training run %s",
            "Registered" if created else "Found registered",
            self.registered_model,
            number,
            run_id,
        )
        version_tags.record_gate_results(client, self.registered_model, number, results, gates=gates)
        if passed:
            aliases.set_challenger(client, self.registered_model, number, alias=self.challenger_alias)
        url = audit.model_version_ui_url(tracking_uri, self.registered_model, number)
        self.log.info("Gates of %s v%s:\n%s", self.registered_model, number, gate_logic.gate_table(results))
        result = {
            "registered_model": self.registered_model,
            "version": number,
            "created": created,
            "passed": passed,
            "gates": [r.to_dict() for r in results],
            "failed": [r.name for r in results if not r.passed],
            "policy_hash": gate_logic.gate_policy_hash(gates),
            "train_run_id": run_id,
            "model_uri": f"models:/{self.registered_model}/{number}",
            "model_version_url": url,
            "challenger_alias": self.challenger_alias if passed else None,
        }
        ti.xcom_push(key=REGISTRATION_XCOM_KEY, value=result)
        if passed:
            self.log.info("%s v%s passed every gate: alias %r set", self.registered_model, number, self.challenger_alias)
            return result
        bad = gate_logic.failed(results)
        for r in bad:
            self.log.warning("Gate failed: %s: %s", r.name, r.detail)
        if self.on_gate_failure == "fail":
            raise GateFailed(registered_model=self.registered_model, version=number, failed=bad)
        raise AirflowSkipException(
            f"{self.registered_model} v{number} failed {len(bad)} of {len(results)} gates "
            f"({'; '.join(f'{r.name}: {r.detail}' for r in bad)}); promotion skipped, the champion stays"
        )


class ApproveModelVersionOperator(ApprovalOperator):
    """Airflow's human-in-the-loop ApprovalOperator for one registered version: the form shows the
    gate table, lineage and a link to MLflow, and asks for a comment; the decision (who, when, the
    comment) is recorded on the model version as soon as it is made, Approve or Reject.

    :param registered_model: the registered model name.
    :param registration: the register task's XCom (`register_task.output`) or a version number. Templated.
    :param mlflow_conn_id: a `rayops_mlflow` connection; None: the embedded local store.
    :param champion_alias: the alias the version will get (shown in the form).
    :param challenger_alias: removed from the version on Reject (it no longer waits for promotion).

    Everything else is ApprovalOperator's (`response_timeout`, `assigned_users`, `notifiers`,
    `fail_on_reject`...). Approve: downstream runs; Reject: downstream is skipped. The XCom is
    ApprovalOperator's: `{chosen_options, params_input: {comment}, responded_at, responded_by_user: {id, name}}`.
    """

    # subject and body are written in execute() from the version; config text never reaches Jinja.
    template_fields: Sequence[str] = ("registration",)
    operator_extra_links = (MlflowModelVersionLink(),)

    def __init__(
        self,
        *,
        registered_model: str,
        registration: Any,
        mlflow_conn_id: str | None = None,
        champion_alias: str = "champion",
        challenger_alias: str = "challenger",
        subject: str | None = None,
        body: str | None = None,
        params: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        comment = Param(
            "", type="string", title="Comment", description="Why you approve or reject; recorded on the model version."
        )
        super().__init__(
            subject=subject or f"Promote a new version of {registered_model} to {champion_alias}?",
            body=body,
            params={COMMENT_PARAM: comment, **dict(params or {})},
            **kwargs,
        )
        self.registered_model = registered_model
        self.registration = registration
        self.mlflow_conn_id = mlflow_conn_id
        self.champion_alias = champion_alias
        self.challenger_alias = challenger_alias
        self._custom_body = body is not None

    def execute(self, context: Context) -> Any:
        number = version_of(self.registration)
        client = MlflowHook(self.mlflow_conn_id).get_conn()
        tracking_uri = client.tracking_uri
        version = client.get_model_version(self.registered_model, number)
        champion = aliases.version_by_alias(client, self.registered_model, self.champion_alias)
        context["ti"].xcom_push(key=XCOM_KEY, value=link_xcom_value(tracking_uri, self.registered_model, number))
        url = audit.model_version_ui_url(tracking_uri, self.registered_model, number)
        self.subject = f"Promote {self.registered_model} v{number} to {self.champion_alias}?"
        if not self._custom_body:
            self.body = approval_body(
                self.registered_model, version, champion=champion, champion_alias=self.champion_alias,
                challenger_alias=self.challenger_alias, url=url,
            )  # fmt: skip
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        if "error" not in event:
            self.validate_chosen_options(event["chosen_options"])
            self.validate_params_input(event.get("params_input") or {})
            self._record(event)
        return super().execute_complete(context=context, event=event)

    def _record(self, event: Mapping[str, Any]) -> None:
        number = version_of(self.registration)
        approved = list(event["chosen_options"]) == [self.APPROVE]
        user = event.get("responded_by_user") or {}
        at: Any = event.get("responded_at")  # a datetime, or text or None, passed on as is
        client = MlflowHook(self.mlflow_conn_id).get_conn()
        audit.record_approval(
            client, self.registered_model, number, approved=approved, user_name=user.get("name"), user_id=user.get("id"),
            comment=(event.get("params_input") or {}).get(COMMENT_PARAM), at=at.isoformat() if hasattr(at, "isoformat") else at,
        )  # fmt: skip
        if not approved:
            aliases.clear_alias_if(client, self.registered_model, self.challenger_alias, number)
        self.log.info(
            "%s v%s %s by %s",
            self.registered_model,
            number,
            "approved" if approved else "rejected",
            user.get("name") or user.get("id"),
        )


def approval_body(name: str, version: Any, *, champion: Any, champion_alias: str, challenger_alias: str, url: str) -> str:
    """The approval form's markdown: verdict, gate table, lineage, what each answer does."""
    tags = version.tags or {}
    results = version_tags.gate_results_of(version)
    passed = tags.get(names.GATES_PASSED) == "true"
    serving = f"v{champion.version}" if champion is not None else "none yet (this would be the first)"
    lines = [
        f"**{name} v{version.version}** {'passed every gate' if passed else 'did NOT pass every gate'} "
        f"(policy `{tags.get(names.POLICY_HASH, '?')}`). Current `{champion_alias}`: {serving}.",
        "",
        gate_logic.gate_table(results, markdown=True),
        "",
        f"- Data: `{tags.get(names.SNAPSHOT_URI, '?')}` (hash `{tags.get(names.SNAPSHOT_HASH, '?')}`)",
        f"- Config: `{tags.get(names.CONFIG_HASH, '?')}` at git `{tags.get(names.CONFIG_GIT_COMMIT, '?')}`",
        f"- Trained by: DAG `{tags.get(names.DAG_ID, '?')}` run `{tags.get(names.RUN_ID, '?')}`; "
        f"training run `{tags.get(names.TRAIN_RUN_ID, version.run_id)}`",
    ]
    if url:
        lines.append(f"- [Open v{version.version} in MLflow]({url})")
    lines += [
        "",
        f"**Approve**: the version goes on to deploy and becomes `{champion_alias}`. "
        f"**Reject**: the current `{champion_alias}` keeps serving and v{version.version} loses `{challenger_alias}`. "
        "Your name and comment are recorded on the model version.",
    ]
    return "\n".join(lines)


class PromoteMLflowModelOperator(BaseOperator):
    """Make a version the champion: the old champion keeps the previous alias (rollback without
    search), and who or what approved it is recorded on the version.

    :param registered_model: the registered model name.
    :param version: the version number, or the register task's XCom dict (`register_task.output`). Templated.
    :param approval: the approval task's XCom (`approve_task.output`; ApprovalOperator's shape), or
        None when the pipeline needs no person: then the gate policy the version passed (gate set
        and hash) is recorded as its approval. Templated.
    :param champion_alias: alias of the serving version.
    :param previous_alias: alias kept on the champion it replaces.
    :param challenger_alias: removed from the version once it is champion.
    :param mlflow_conn_id: a `rayops_mlflow` connection; None: the embedded local store.

    Refuses (`PromotionRefused`) a version whose gates did not all pass. A version that is
    champion already is left as it is (a retry changes nothing). A rejection in `approval` skips.
    Returns `{registered_model, version, champion_alias, previous_version, changed, approval:
    {decision, by, comment}, model_uri: "models:/<name>@<champion>", model_version_url}`.
    """

    template_fields: Sequence[str] = ("version", "approval")
    template_fields_renderers = {"approval": "json"}
    operator_extra_links = (MlflowModelVersionLink(),)
    ui_color = "#d6f5e3"

    def __init__(
        self,
        *,
        registered_model: str,
        version: Any,
        approval: Any = None,
        champion_alias: str = "champion",
        previous_alias: str = "previous",
        challenger_alias: str = "challenger",
        mlflow_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if len({champion_alias, previous_alias, challenger_alias}) != 3:
            raise ValueError(
                f"aliases must differ: champion={champion_alias!r} previous={previous_alias!r} challenger={challenger_alias!r}"
            )
        self.registered_model = registered_model
        self.version = version
        self.approval = approval
        self.champion_alias = champion_alias
        self.previous_alias = previous_alias
        self.challenger_alias = challenger_alias
        self.mlflow_conn_id = mlflow_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        number = version_of(self.version)
        approval = as_mapping(self.approval, what="approval")
        name = self.registered_model
        client = MlflowHook(self.mlflow_conn_id).get_conn()
        tracking_uri = client.tracking_uri
        context["ti"].xcom_push(key=XCOM_KEY, value=link_xcom_value(tracking_uri, name, number))
        audit.require_gates_passed(client, name, number)
        if approval is not None:
            decision = self._record_person(client, number, approval)
        else:
            written = audit.record_policy_approval(client, name, number, at=_now())
            decision = {"decision": "policy", "by": written[names.APPROVED_BY], "comment": None}
        moved = aliases.promote_to_champion(
            client, name, number, champion_alias=self.champion_alias, previous_alias=self.previous_alias,
            challenger_alias=self.challenger_alias,
        )  # fmt: skip
        tags = client.get_model_version(name, number).tags or {}
        if moved.changed or names.PROMOTED_AT not in tags:
            version_tags.set_version_tags(client, name, number, {
                names.PROMOTED_AT: _now(),
                names.PROMOTED_BY: _task_label(context),
                names.REPLACED_VERSION: moved.previous or "",
            })  # fmt: skip
        url = audit.model_version_ui_url(tracking_uri, name, number)
        if moved.changed:
            self.log.info("%s v%s is now %r; %s", name, number, self.champion_alias,
                          f"v{moved.previous} keeps {self.previous_alias!r}" if moved.previous else "it is the first champion")  # fmt: skip
        else:
            self.log.info("%s v%s was %r already; nothing moved", name, number, self.champion_alias)
        return {
            "registered_model": name,
            "version": number,
            "champion_alias": self.champion_alias,
            "previous_version": moved.previous,
            "changed": moved.changed,
            "approval": decision,
            "model_uri": f"models:/{name}@{self.champion_alias}",
            "model_version_url": url,
        }

    def _record_person(self, client: MlflowClient, number: str, approval: Mapping[str, Any]) -> dict[str, Any]:
        chosen = list(approval.get("chosen_options") or [])
        user = approval.get("responded_by_user") or {}
        comment = (approval.get("params_input") or {}).get(COMMENT_PARAM)
        at: Any = approval.get("responded_at")  # a datetime, or text or None, passed on as is
        approved = chosen == [ApprovalOperator.APPROVE]
        audit.record_approval(
            client, self.registered_model, number, approved=approved, user_name=user.get("name"), user_id=user.get("id"),
            comment=comment, at=at.isoformat() if hasattr(at, "isoformat") else at,
        )  # fmt: skip
        who = user.get("name") or user.get("id") or "unknown"
        if not approved:
            aliases.clear_alias_if(client, self.registered_model, self.challenger_alias, number)
            raise AirflowSkipException(
                f"{self.registered_model} v{number} was not approved ({chosen}) by {who}: {comment or 'no comment'}"
            )
        return {"decision": "approved", "by": who, "comment": comment}
