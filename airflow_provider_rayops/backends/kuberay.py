"""The `kuberay` backend: refused until the KubeRay issue builds it.

The profile model exists (config/compute.py) so pipelines can be written and validated against
it; running them must fail loudly rather than pretend.
"""

from __future__ import annotations

from typing import NoReturn

from airflow_provider_rayops.config.compute import KubeRayProfile
from airflow_provider_rayops.hooks.ray_jobs_api import BackendNotAvailable

NOT_AVAILABLE_MESSAGE = "the kuberay backend is not available yet: it arrives with the KubeRay issue; use a local or ray profile"


def kuberay_backend(profile: KubeRayProfile) -> NoReturn:
    raise BackendNotAvailable(NOT_AVAILABLE_MESSAGE)
