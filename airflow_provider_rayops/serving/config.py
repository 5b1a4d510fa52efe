"""The Serve config of a pipeline's endpoint: its router application and one application per
version (serving/app.py says why), as the Serve REST API's `applications` entries.

No Ray here: the deploy operator builds these in Airflow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

ROUTER_IMPORT_PATH = "airflow_provider_rayops.serving.app:build_router"
VERSION_IMPORT_PATH = "airflow_provider_rayops.serving.app:build_version"
# The deployments' names in their applications, and the router's own routes.
ROUTER = "Router"
VERSION_DEPLOYMENT = "Model"
HEALTH_PATH = "/-/healthz"
STATS_PATH = "/-/stats"


def version_app_name(pipeline: str, version: str) -> str:
    return f"{pipeline}--v{version}"


def applications(
    *,
    pipeline: str,
    registered_model: str,
    weights: Mapping[str, float],
    champion: str | None = None,
    route_prefix: str | None = None,
    batch: Mapping[str, Any] | None = None,
    replicas: Mapping[str, Any] | None = None,
    limits: Mapping[str, int] | None = None,
    sticky_header: str = "",
    runtime_env: Mapping[str, Any] | None = None,
    inference_log: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The router (named `pipeline`, at `route_prefix`, default `/<pipeline>`) and one application
    per version in `weights` (a version of weight 0 is deployed and gets no traffic); `champion`
    (default: the first version) answers what another version fails. `inference_log`
    (`{uri, sample}`) has each version write a sample of what it serves there (serving/inference_log.py)."""
    versions = [str(v) for v in weights]
    if not versions:
        raise ValueError("an endpoint serves at least one version")
    champion = str(champion) if champion is not None else versions[0]
    if champion not in versions:
        raise ValueError(f"champion {champion!r} is not one of the versions {versions}")
    env = dict(runtime_env or {})
    router = {
        "name": pipeline,
        "route_prefix": route_prefix or f"/{pipeline}",
        "import_path": ROUTER_IMPORT_PATH,
        "runtime_env": env,
        "args": {"pipeline": pipeline, **dict(limits or {})},
        "deployments": [
            {
                "name": ROUTER,
                "user_config": {
                    "versions": {v: version_app_name(pipeline, v) for v in versions},
                    "champion": champion,
                    "weights": {str(v): float(w) for v, w in weights.items()},
                    "sticky_header": sticky_header,
                },
            }
        ],
    }
    apps = [
        {
            "name": version_app_name(pipeline, v),
            "route_prefix": None,
            "import_path": VERSION_IMPORT_PATH,
            "runtime_env": env,
            "args": {
                "registered_model": registered_model,
                "version": v,
                "batch": dict(batch or {}),
                "replicas": dict(replicas or {}),
                **({"inference_log": dict(inference_log)} if inference_log else {}),
            },
        }
        for v in versions
    ]
    return [router, *apps]


def replace_pipeline(
    current: Sequence[Mapping[str, Any]], pipeline: str, new: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """`current` applications (those the cluster runs, from the Serve API) with the pipeline's
    router and version applications replaced by `new`: the REST API's PUT replaces every
    application on the cluster, so the others must be sent back unchanged."""
    ours = {pipeline} | {str(a["name"]) for a in new}
    prefix = version_app_name(pipeline, "")
    kept = [dict(a) for a in current if a["name"] not in ours and not str(a["name"]).startswith(prefix)]
    return kept + [dict(a) for a in new]
