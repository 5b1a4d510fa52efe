"""Which version is the champion, and is a candidate model that version.

The lookups the evaluate job makes before it scores the champion (scoring stays in
jobs/evaluate.py). No Airflow here: this runs inside a Ray job.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_rayops.registry.aliases import version_by_alias
from airflow_provider_rayops.registry.errors import NOT_FOUND

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


@dataclass(frozen=True)
class ModelIdentity:
    """What a model URI points at in MLflow, as far as it can be told (for "is it the champion?")."""

    model_id: str | None = None
    registered_model: str | None = None
    version: str | None = None

    def same_as(self, version: Any) -> bool:
        # A version registered from `models:/m-...` may carry its logged model only in `source`.
        source = str(getattr(version, "source", None) or "")
        version_model_id = getattr(version, "model_id", None) or (
            source[len("models:/") :] if source.startswith("models:/m-") else None
        )
        if self.model_id and version_model_id == self.model_id:
            return True
        return bool(self.registered_model) and self.registered_model == version.name and self.version == str(version.version)


def model_identity(client: MlflowClient, uri: str) -> ModelIdentity:
    if not uri.startswith("models:/"):
        return ModelIdentity()
    rest = uri[len("models:/") :].strip("/")
    try:
        if "/" not in rest and "@" not in rest:
            return ModelIdentity(model_id=rest)
        if "@" in rest:
            name, alias = rest.split("@", 1)
            version = client.get_model_version_by_alias(name, alias)
        else:
            name, number = rest.split("/", 1)
            version = client.get_model_version(name, number)
    except Exception:  # a candidate outside the registry cannot be the champion
        return ModelIdentity()
    return ModelIdentity(model_id=getattr(version, "model_id", None), registered_model=version.name, version=str(version.version))


def find_champion(client: MlflowClient, name: str, alias: str) -> tuple[ModelVersion | None, str | None]:
    """(model version, None) for `name@alias`, or (None, why there is none)."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code in NOT_FOUND:
            return None, f"registered model {name!r} does not exist"
        raise
    version = version_by_alias(client, name, alias)
    if version is None:
        return None, f"registered model {name!r} has no version with alias {alias!r}"
    return version, None
