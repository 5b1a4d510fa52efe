"""The registry's aliases, never stages:

    <challenger>  the version that passed every gate and waits for approval / deploy
    <champion>    the version that serves
    <previous>    the champion before the current one: rollback is `models:/<name>@previous`

Alias moves check where the aliases already point, so a retried Airflow task repeats them
safely. No Airflow here; callers pass an `MlflowClient`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from airflow_provider_rayops.registry.errors import NOT_FOUND

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion


@dataclass(frozen=True)
class Promotion:
    """Where the aliases point after `promote_to_champion`."""

    registered_model: str
    champion: str
    previous: str | None  # the version now holding the previous alias (None: first champion)
    changed: bool  # False when the version was champion already (a repeated promotion)


def version_by_alias(client: MlflowClient, name: str, alias: str) -> ModelVersion | None:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in NOT_FOUND or exc.error_code == "INVALID_PARAMETER_VALUE":
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
