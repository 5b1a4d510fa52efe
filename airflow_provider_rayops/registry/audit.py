"""The MLflow model registry side of promotion: versions, aliases and the audit trail on them.

Aliases, never stages:

    <challenger>  the version that passed every gate and waits for approval / deploy
    <champion>    the version that serves
    <previous>    the champion before the current one: rollback is `models:/<name>@previous`

Everything the audit question needs ("why is this version serving?") is on the version itself,
as `rayops.*` tags (names in airflow_provider_rayops/tag_names.py): the lineage copied from the training run (data
snapshot and hash, config hash and git commit, Airflow dag/run/try, Ray job id), the gate
results and the policy they came from, and who or which policy approved it. `audit_record`
reads them back.

Every function is idempotent, so a retried Airflow task repeats them safely: a training run's
logged model is registered once (`register_version` finds the earlier version), tags are
overwritten with the same values, and alias moves check where the aliases already point.
No Airflow here; callers pass an `MlflowClient`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from airflow_provider_rayops import tag_names as names
from airflow_provider_rayops.registry.gates import GateResult, fmt, gate_policy_hash, normalize_gates

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

logger = logging.getLogger(__name__)

# Run tags that are bookkeeping of the run, not lineage of the model: not copied onto versions.
_RUN_ONLY_TAGS = (names.RUN_KEY, names.RUN_KIND, names.EVAL_PREFIX)
_NOT_FOUND = {"RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "ENDPOINT_NOT_FOUND"}
_EXISTS = {"RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"}


class RegistryError(RuntimeError):
    """The registry refused or lacks something promotion needs; the message says what."""


class PromotionRefused(RegistryError):
    """A version may not become champion (gates failed, or it was not judged by rayops)."""

    def __init__(self, *, registered_model: str, version: str, reason: str) -> None:
        self.registered_model = registered_model
        self.version = version
        self.reason = reason
        super().__init__(f"{registered_model} v{version} cannot be promoted: {reason}")


@dataclass(frozen=True)
class Promotion:
    """Where the aliases point after `promote_to_champion`."""

    registered_model: str
    champion: str
    previous: str | None  # the version now holding the previous alias (None: first champion)
    changed: bool  # False when the version was champion already (a repeated promotion)


# -- registering --------------------------------------------------------------------------------


def ensure_registered_model(client: MlflowClient, name: str, *, description: str | None = None) -> None:
    """Create the registered model unless it exists (concurrent creation is fine)."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return
    except MlflowException as exc:
        if exc.error_code not in _NOT_FOUND:
            raise
    try:
        client.create_registered_model(name, description=description)
    except MlflowException as exc:
        if exc.error_code not in _EXISTS:
            raise


def logged_model_id(model_uri: str) -> str | None:
    """`m-...` of a `models:/m-...` URI (a logged model), else None."""
    if model_uri.startswith("models:/m-") and "/" not in model_uri[len("models:/") :].strip("/"):
        return model_uri[len("models:/") :].strip("/")
    return None


def find_version(client: MlflowClient, name: str, *, run_id: str, model_uri: str) -> ModelVersion | None:
    """The version of `name` registered from this training run and model, oldest first if several.

    Matched by the run (the version's run_id, or our train-run tag) and the model (the logged
    model id, or the source URI): a training run that logged a new model (a different checkpoint)
    gets a new version, a retry of the same registration does not.
    """
    model_id = logged_model_id(model_uri)
    found = []
    for version in _versions_of_run(client, name, run_id):
        same_run = version.run_id == run_id or (version.tags or {}).get(names.TRAIN_RUN_ID) == run_id
        version_model = getattr(version, "model_id", None)
        same_model = (
            (model_id is not None and version_model == model_id)
            or version.source == model_uri
            or ((version.tags or {}).get(names.LOGGED_MODEL_URI) == model_uri)
        )
        if same_run and same_model and version.current_stage != "Deleted":
            found.append(version)
    return min(found, key=lambda v: int(v.version)) if found else None


def _versions_of_run(client: MlflowClient, name: str, run_id: str) -> list[ModelVersion]:
    quoted = name.replace("'", "\\'")
    return list(client.search_model_versions(f"name = '{quoted}' and run_id = '{run_id}'", max_results=100))


def register_version(
    client: MlflowClient,
    *,
    registered_model: str,
    model_uri: str,
    run_id: str,
    tags: Mapping[str, Any] | None = None,
    description: str | None = None,
) -> tuple[ModelVersion, bool]:
    """(version, created): a new version of `registered_model` (created if missing) from the
    training run's logged model, or the one an earlier try registered from the same run and model.

    `tags` and `description` are set either way, so a retry finishes what a crashed try began.
    """
    ensure_registered_model(client, registered_model)
    all_tags = {names.TRAIN_RUN_ID: run_id, names.LOGGED_MODEL_URI: model_uri, **dict(tags or {})}
    existing = find_version(client, registered_model, run_id=run_id, model_uri=model_uri)
    if existing is not None:
        logger.info("%s v%s was registered from run %s already; reusing it", registered_model, existing.version, run_id)
        set_version_tags(client, registered_model, existing.version, all_tags)
        if description is not None and existing.description != description:
            client.update_model_version(registered_model, existing.version, description=description)
        return client.get_model_version(registered_model, existing.version), False
    model_id = logged_model_id(model_uri)
    source = model_uri
    if model_id is not None and urlsplit(client.tracking_uri).scheme not in ("http", "https"):
        # MLflow's database registry store looks `models:/<id>` up through the process-wide
        # tracking URI (a TODO in MLflow), not this client's: give it the model's location.
        source = client.get_logged_model(model_id).artifact_location
    version = client.create_model_version(
        name=registered_model,
        source=source,
        run_id=run_id,
        tags=names.tag_values(all_tags, limit=names.VERSION_TAG_LIMIT),
        description=description,
        model_id=model_id,
    )
    _link_logged_model(client, model_uri, registered_model, version.version)
    # Two registrations racing (not a retry: two live tries) would both create; keep the first.
    twin = find_version(client, registered_model, run_id=run_id, model_uri=model_uri)
    if twin is not None and twin.version != version.version:
        client.delete_model_version(registered_model, version.version)
        return client.get_model_version(registered_model, twin.version), False
    return version, True


def _link_logged_model(client: MlflowClient, model_uri: str, name: str, version: str) -> None:
    """Record the version on the logged model, as `mlflow.register_model` does (its UI links it)."""
    model_id = logged_model_id(model_uri)
    if model_id is None:
        return
    try:
        from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

        model = client.get_logged_model(model_id)
        known = json.loads((model.tags or {}).get(MLFLOW_MODEL_VERSIONS) or "[]")
        entry = {"name": name, "version": str(version)}
        if entry not in known:
            client.set_logged_model_tags(model_id, {MLFLOW_MODEL_VERSIONS: json.dumps([*known, entry])})
    except Exception as exc:  # a convenience for the UI only; the version is registered
        logger.warning("could not link logged model %s to %s v%s: %s", model_id, name, version, exc)


def lineage_from_run(client: MlflowClient, run_id: str) -> dict[str, str]:
    """The training run's `rayops.*` lineage tags (snapshot, config, Airflow run, Ray job...)."""
    tags = client.get_run(run_id).data.tags
    return {k: v for k, v in tags.items() if k.startswith(names.PREFIX) and not k.startswith(_RUN_ONLY_TAGS)}


def set_version_tags(client: MlflowClient, name: str, version: str | int, tags: Mapping[str, Any]) -> None:
    for key, value in names.tag_values(tags, limit=names.VERSION_TAG_LIMIT).items():
        client.set_model_version_tag(name, str(version), key, value)


# -- gates --------------------------------------------------------------------------------------


def record_gate_results(
    client: MlflowClient,
    name: str,
    version: str | int,
    results: Sequence[GateResult],
    *,
    gates: Sequence[Any],
) -> dict[str, str]:
    """Write the gate results on the version as tags: one `rayops.gate.<i>` line per gate (never
    cut), the policy and its hash, and the whole list as JSON (`rayops.gates`, cut to the tag cap).

    Tags, not an artifact: code in Airflow writes no artifacts (`MlflowHook.get_conn()`), and
    the registry UI shows tags on the version itself.

    Returns the tags written. Gate tags of an earlier, longer result list are cleared, so the
    version never shows a stale `rayops.gate.<i>`.
    """
    policy = normalize_gates(gates)
    passed = all(r.passed for r in results)
    tags: dict[str, Any] = {
        names.GATES: [r.to_dict() for r in results],
        names.GATES_PASSED: "true" if passed else "false",
        names.GATES_FAILED: "; ".join(r.name for r in results if not r.passed),
        names.GATE_POLICY: policy,
        names.POLICY_HASH: gate_policy_hash(policy),
    }
    for i, result in enumerate(results):
        tags[f"{names.GATE_PREFIX}{i}"] = gate_line(result)
    current = client.get_model_version(name, str(version)).tags or {}
    for key in current:
        if (
            key.startswith(names.GATE_PREFIX)
            and key[len(names.GATE_PREFIX) :].isdigit()
            and int(key[len(names.GATE_PREFIX) :]) >= len(results)
        ):
            client.delete_model_version_tag(name, str(version), key)
    set_version_tags(client, name, version, tags)
    return names.tag_values(tags, limit=names.VERSION_TAG_LIMIT)


def gate_line(result: GateResult) -> str:
    return f"{'PASS' if result.passed else 'FAIL'} {result.name}: {result.detail}"


def gate_results_of(version: ModelVersion) -> list[GateResult]:
    """The gate results recorded on a version (empty when none were)."""
    raw = (version.tags or {}).get(names.GATES)
    return [GateResult.from_dict(item) for item in json.loads(raw)] if raw else []


# -- aliases ------------------------------------------------------------------------------------


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in _NOT_FOUND or exc.error_code == "INVALID_PARAMETER_VALUE":
            return None
        raise


def set_challenger(client: MlflowClient, name: str, version: str | int, *, alias: str = "challenger") -> None:
    """Point the challenger alias at `version` (a newer passing version takes it over)."""
    client.set_registered_model_alias(name, alias, str(version))


def clear_alias_if(client: MlflowClient, name: str, alias: str, version: str | int) -> bool:
    """Remove `alias` if it points at `version`; True when it did."""
    current = version_by_alias(client, name, alias)
    if current is not None and str(current.version) == str(version):
        client.delete_registered_model_alias(name, alias)
        return True
    return False


def promote_to_champion(
    client: MlflowClient,
    name: str,
    version: str | int,
    *,
    champion_alias: str = "champion",
    previous_alias: str = "previous",
    challenger_alias: str | None = "challenger",
) -> Promotion:
    """Make `version` the champion; the old champion keeps `previous_alias` (rollback without search).

    The previous alias moves first: a crash between the two moves leaves it on the version that
    still serves, and the retry completes the move. A version that is champion already changes
    nothing (the previous alias is not moved onto it). The challenger alias is removed from the
    version once it is champion.
    """
    version = str(version)
    client.get_model_version(name, version)  # fails clearly for a version that does not exist
    current = version_by_alias(client, name, champion_alias)
    if current is not None and str(current.version) == version:
        if challenger_alias:
            clear_alias_if(client, name, challenger_alias, version)
        previous = version_by_alias(client, name, previous_alias)
        return Promotion(name, version, str(previous.version) if previous else None, changed=False)
    previous_version = None
    if current is not None:
        client.set_registered_model_alias(name, previous_alias, str(current.version))
        previous_version = str(current.version)
    client.set_registered_model_alias(name, champion_alias, version)
    if challenger_alias:
        clear_alias_if(client, name, challenger_alias, version)
    return Promotion(name, version, previous_version, changed=True)


# -- approval -----------------------------------------------------------------------------------


def record_approval(
    client: MlflowClient,
    name: str,
    version: str | int,
    *,
    approved: bool,
    user_name: str | None,
    user_id: str | None = None,
    comment: str | None = None,
    at: str | None = None,
) -> dict[str, str]:
    """A person's decision on the version: who, when, what they said."""
    tags = {
        names.APPROVAL: "approved" if approved else "rejected",
        names.APPROVED_BY: user_name or user_id or "unknown",
        names.APPROVED_BY_ID: user_id,
        names.APPROVAL_COMMENT: comment or "",
        names.APPROVED_AT: at,
    }
    set_version_tags(client, name, version, tags)
    return names.tag_values(tags, limit=names.VERSION_TAG_LIMIT)


def record_policy_approval(client: MlflowClient, name: str, version: str | int, *, at: str | None = None) -> dict[str, str]:
    """No person approves: the gate policy the version passed is its approval.

    Refuses (`PromotionRefused`) a version whose recorded gates did not all pass, or that has no
    gate record at all (it was not registered by rayops).
    """
    tags = require_gates_passed(client, name, version).tags or {}
    written = {
        names.APPROVAL: "policy",
        names.APPROVAL_POLICY: tags.get(names.GATE_POLICY, "[]"),
        names.POLICY_HASH: tags.get(names.POLICY_HASH),
        names.APPROVED_BY: f"policy {tags.get(names.POLICY_HASH)}",
        names.APPROVED_AT: at,
    }
    set_version_tags(client, name, version, written)
    return names.tag_values(written, limit=names.VERSION_TAG_LIMIT)


def require_gates_passed(client: MlflowClient, name: str, version: str | int) -> ModelVersion:
    """The version, if its recorded gates all passed; else `PromotionRefused`."""
    found = client.get_model_version(name, str(version))
    state = (found.tags or {}).get(names.GATES_PASSED)
    if state is None:
        raise PromotionRefused(
            registered_model=name, version=str(version), reason="it carries no gate results (not registered by rayops)"
        )
    if state != "true":
        raise PromotionRefused(
            registered_model=name, version=str(version), reason=f"gates failed: {(found.tags or {}).get(names.GATES_FAILED)}"
        )
    return found


# -- reading it back ----------------------------------------------------------------------------


def model_version_ui_url(tracking_uri: str, name: str, version: str | int) -> str:
    """The MLflow UI page of a version; '' for a store without a UI (sqlite, folders)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return ""
    parts = urlsplit(tracking_uri)
    # Credentials in the URL (user:password@host) never reach a link.
    base = urlunsplit((parts.scheme, parts.netloc.rsplit("@", 1)[-1], parts.path, "", ""))
    return f"{base.rstrip('/')}/#/models/{quote(name, safe='')}/versions/{quote(str(version), safe='')}"


def describe_version(
    *,
    registered_model: str,
    model_uri: str,
    run_id: str,
    lineage: Mapping[str, str],
    evaluation: Mapping[str, Any],
    results: Sequence[GateResult],
    registered_by: str | None,
) -> str:
    """The version's description: what it is, where it came from and how it did, in words."""
    lines = [f"{registered_model}: registered from training run {run_id} (model {model_uri})."]
    if registered_by:
        lines.append(f"Registered by Airflow task {registered_by}.")
    dag, airflow_run = lineage.get(names.DAG_ID), lineage.get(names.RUN_ID)
    if dag or airflow_run:
        lines.append(
            f"Trained by Airflow DAG {dag or '?'} run {airflow_run or '?'} (try {lineage.get(names.TRY_NUMBER, '?')}); "
            f"Ray job {lineage.get(names.RAY_JOB_ID) or 'unknown'}."
        )
    snapshot = lineage.get(names.SNAPSHOT_URI) or evaluation.get("snapshot_uri")
    if snapshot:
        lines.append(
            f"Data: {snapshot} (content hash {lineage.get(names.SNAPSHOT_HASH) or evaluation.get('snapshot_hash') or 'unknown'})."
        )
    if lineage.get(names.CONFIG_HASH):
        lines.append(f"Pipeline config {lineage[names.CONFIG_HASH]} at git {lineage.get(names.CONFIG_GIT_COMMIT) or 'unknown'}.")
    metrics = evaluation.get("metrics") or {}
    if metrics:
        shown = ", ".join(f"{k} {fmt(v)}" for k, v in metrics.items())
        lines.append(f"Validation ({evaluation.get('rows', '?')} rows): {shown}.")
    champion = evaluation.get("champion")
    if champion:
        lines.append(f"Compared with champion v{champion.get('version')} on the same rows.")
    elif evaluation.get("champion_absent_reason"):
        lines.append(f"No champion to compare with: {evaluation['champion_absent_reason']}.")
    if results:
        bad = [r for r in results if not r.passed]
        verdict = "passed every gate" if not bad else f"FAILED {len(bad)} of {len(results)} gates"
        lines.append(f"Gates: {verdict}.")
        lines += [f"- {gate_line(r)}" for r in results]
    else:
        lines.append("Gates: none configured.")
    return "\n".join(lines)


def audit_record(
    client: MlflowClient, name: str, *, alias: str | None = None, version: str | int | None = None
) -> dict[str, Any]:
    """Why a version serves, from MLflow alone: data, config, Airflow run, gates, approval, aliases."""
    if (alias is None) == (version is None):
        raise ValueError("give exactly one of alias or version")
    found = client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, str(version))
    tags = found.tags or {}
    aliases = list(getattr(found, "aliases", None) or [])
    return {
        "registered_model": name,
        "version": str(found.version),
        "aliases": aliases,
        "train_run_id": tags.get(names.TRAIN_RUN_ID) or found.run_id,
        "model_uri": tags.get(names.LOGGED_MODEL_URI) or found.source,
        "snapshot_uri": tags.get(names.SNAPSHOT_URI),
        "snapshot_hash": tags.get(names.SNAPSHOT_HASH),
        "config_hash": tags.get(names.CONFIG_HASH),
        "config_git_commit": tags.get(names.CONFIG_GIT_COMMIT),
        "airflow": {k: tags.get(f"rayops.{k}") for k in ("dag_id", "run_id", "task_id", "try_number")},
        "ray_job_id": tags.get(names.RAY_JOB_ID),
        "gates_passed": tags.get(names.GATES_PASSED) == "true",
        "gates": [r.to_dict() for r in gate_results_of(found)],
        "policy_hash": tags.get(names.POLICY_HASH),
        "approval": {
            "decision": tags.get(names.APPROVAL),
            "by": tags.get(names.APPROVED_BY),
            "by_id": tags.get(names.APPROVED_BY_ID),
            "comment": tags.get(names.APPROVAL_COMMENT),
            "at": tags.get(names.APPROVED_AT),
            "policy": json.loads(tags[names.APPROVAL_POLICY]) if tags.get(names.APPROVAL_POLICY) else None,
        },
        "promoted_at": tags.get(names.PROMOTED_AT),
        "promoted_by": tags.get(names.PROMOTED_BY),
        "replaced_version": tags.get(names.REPLACED_VERSION),
        "description": found.description,
    }
