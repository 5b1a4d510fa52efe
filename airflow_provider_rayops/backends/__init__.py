"""The compute plane: where Ray jobs run, behind one interface (`ComputeBackend`).

    backend = get_backend({"backend": "local"})      # or a LocalProfile / RayClusterProfile
    endpoint = backend.endpoint()                      # dashboard URL + token, head started if needed

`local` starts or reuses an embedded head; `ray` reads an Airflow connection; `kuberay` creates
KubeRay resources (backends/kuberay/). Importing this package imports neither Airflow nor Ray.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter

from airflow_provider_rayops.backends.base import ComputeBackend
from airflow_provider_rayops.config.compute import ComputeProfile, KubeRayProfile, LocalProfile, RayClusterProfile

_PROFILE = TypeAdapter(ComputeProfile)

__all__ = ["ComputeBackend", "get_backend", "parse_profile"]


def parse_profile(profile: Mapping[str, Any] | LocalProfile | RayClusterProfile | KubeRayProfile | None) -> Any:
    """A validated compute profile; None means the default `{"backend": "local"}`."""
    if profile is None:
        profile = {"backend": "local"}
    if isinstance(profile, (LocalProfile, RayClusterProfile, KubeRayProfile)):
        return profile
    return _PROFILE.validate_python(dict(profile))


def get_backend(profile: Mapping[str, Any] | LocalProfile | RayClusterProfile | KubeRayProfile | None) -> ComputeBackend:
    """The backend for a compute profile (a plain dict as in YAML, or a profile model).

    Raises pydantic.ValidationError for a malformed profile.
    """
    parsed = parse_profile(profile)
    if isinstance(parsed, LocalProfile):
        from airflow_provider_rayops.backends.local import LocalBackend

        return LocalBackend(parsed)
    if isinstance(parsed, RayClusterProfile):
        from airflow_provider_rayops.backends.ray_cluster import RayClusterBackend

        return RayClusterBackend(parsed)
    from airflow_provider_rayops.backends.kuberay import KubeRayBackend

    return KubeRayBackend(parsed)
