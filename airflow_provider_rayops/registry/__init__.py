"""The registry plane: promotion gates and the MLflow model registry (versions, aliases, audit tags).

Pure logic over MLflow's client, no Airflow: the operators in operators/mlflow_model.py call it,
and the evaluate job (a Ray job) looks the champion up with it. One module a piece:

- gates.py: the promotion gates of the YAML, judged on an evaluation
- version_tags.py: the `rayops.*` tags on a version: lineage from the training run, gate results
- registration.py: a training run's logged model registered as a version, once
- aliases.py: challenger / champion / previous aliases, never stages
- audit.py: approvals (a person's or the gate policy's) and reading the record back
- champion.py: which version is the champion, and whether a candidate is it
- errors.py: RegistryError, PromotionRefused, the MLflow error codes told apart

Every function that writes is idempotent, so a retried Airflow task repeats them safely: a
training run's logged model is registered once (`register_version` finds the earlier version),
tags are overwritten with the same values, and alias moves check where the aliases already point.
"""

from airflow_provider_rayops.registry.aliases import Promotion, promote_to_champion, set_challenger
from airflow_provider_rayops.registry.audit import audit_record
from airflow_provider_rayops.registry.errors import PromotionRefused, RegistryError
from airflow_provider_rayops.registry.gates import GateResult, evaluate_gates, gate_policy_hash, gate_table
from airflow_provider_rayops.registry.registration import register_version

__all__ = [
    "GateResult",
    "Promotion",
    "PromotionRefused",
    "RegistryError",
    "audit_record",
    "evaluate_gates",
    "gate_policy_hash",
    "gate_table",
    "promote_to_champion",
    "register_version",
    "set_challenger",
]
