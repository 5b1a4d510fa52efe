"""The registry plane: promotion gates and the MLflow model registry (versions, aliases, audit tags).

Pure logic over MLflow's client, no Airflow: the operators in operators/mlflow_model.py call it.
"""

from airflow_provider_rayops.registry.audit import (
    Promotion,
    PromotionRefused,
    RegistryError,
    audit_record,
    promote_to_champion,
    register_version,
    set_challenger,
)
from airflow_provider_rayops.registry.gates import GateResult, evaluate_gates, gate_policy_hash, gate_table

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
