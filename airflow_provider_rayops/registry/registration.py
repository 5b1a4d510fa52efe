"""Registering a training run's logged model as a version of a registered model, once.

`register_version` is idempotent, so a retried Airflow task repeats it safely: a training run's
logged model is registered once (it finds the earlier version), and the tags are overwritten
with the same values. No Airflow here; callers pass an `MlflowClient`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_rayops import tag_names as names
from airflow_provider_rayops.registry.errors import ALREADY_EXISTS, NOT_FOUND
from airflow_provider_rayops.registry.version_tags import set_version_tags

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

logger = logging.getLogger(__name__)


def ensure_registered_model(client: MlflowClient, name: str, *, description: str | None = None) -> None:
    """Create the registered model unless it exists (concurrent creation is fine)."""
    from mlflow.exceptions import MlflowException

    try:
        client.get_registered_model(name)
        return
    except MlflowException as exc:
        if exc.error_code not in NOT_FOUND:
            raise
    try:
        client.create_registered_model(name, description=description)
    except MlflowException as exc:
        if exc.error_code not in ALREADY_EXISTS:
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
