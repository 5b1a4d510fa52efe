"""The `rayops.*` tags on a model version: the lineage copied from the training run and the gate results.

Everything the audit question needs ("why is this version serving?") is on the version itself,
as `rayops.*` tags (names in airflow_provider_rayops/tag_names.py): the lineage copied from the training run (data
snapshot and hash, config hash and git commit, Airflow dag/run/try, Ray job id), the gate
results and the policy they came from (here), and who or which policy approved it
(registry/audit.py). `audit.audit_record` reads them back.

Writing a tag again with the same value changes nothing, so a retried task repeats these safely.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_rayops import tag_names as names
from airflow_provider_rayops.registry.gates import GateResult, gate_policy_hash, normalize_gates

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

# Run tags that are bookkeeping of the run, not lineage of the model: not copied onto versions.
_RUN_ONLY_TAGS = (names.RUN_KEY, names.RUN_KIND, names.EVAL_PREFIX)


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
