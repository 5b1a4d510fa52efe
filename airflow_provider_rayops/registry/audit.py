"""The audit trail on a version: who or which policy approved it, and reading it all back.

Everything the audit question needs ("why is this version serving?") is on the version itself
as `rayops.*` tags (registry/version_tags.py writes the lineage and the gate results, this module
the approval); `audit_record` reads them back, from MLflow alone. Recording an approval again
overwrites its tags, so a retried Airflow task repeats it safely. No Airflow here; callers pass
an `MlflowClient`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from airflow_provider_rayops import tag_names as names
from airflow_provider_rayops.registry.errors import PromotionRefused
from airflow_provider_rayops.registry.gates import GateResult, fmt
from airflow_provider_rayops.registry.version_tags import gate_line, gate_results_of, set_version_tags

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


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
