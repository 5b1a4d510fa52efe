"""The compute plane's interface: where a Ray job runs (`ComputeBackend`).

Every backend ends at a Ray dashboard that speaks the Jobs REST API; a backend's job is to
say which one (`endpoint()`) and, for the embedded head, to make it exist. The operator and
the trigger talk to that endpoint through `RayHook`'s clients (`hooks.ray_jobs_api`).

This module imports no Airflow (job code and tooling use it) and no Ray.
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from airflow_provider_rayops.config.compute import ComputeProfile
from airflow_provider_rayops.hooks.ray_jobs_api import RayEndpoint


class ComputeBackend(abc.ABC):
    """Where a pipeline's Ray jobs run. Built from a compute profile by `backends.get_backend`."""

    kind: ClassVar[str]

    @property
    @abc.abstractmethod
    def profile(self) -> ComputeProfile:
        """The profile this backend was built from, with defaults resolved (safe to hand to a trigger)."""

    @abc.abstractmethod
    def endpoint(self) -> RayEndpoint:
        """The dashboard to submit to, ready to take jobs (the local backend starts its head if needed)."""

    @abc.abstractmethod
    async def aendpoint(self) -> RayEndpoint:
        """The same endpoint from async code: no blocking I/O in the event loop, and nothing is started."""

    def profile_dict(self) -> dict[str, Any]:
        """The resolved profile as a plain dict (no secrets: connections are referenced by id).
        Defaults are left out: they come back when the dict is parsed again (trigger kwargs stay small)."""
        return self.profile.model_dump(mode="json", exclude_none=True, exclude_defaults=True) | {"backend": self.profile.backend}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.profile_dict()!r})"
