"""The `ray` backend: an existing Ray cluster, reached through its dashboard's Jobs API.

The address and token come from an Airflow connection of type `rayops_ray` (host = dashboard
URL, password = Ray auth token), read through `RayHook`; nothing secret is kept on the backend
object or handed to triggers.
"""

from __future__ import annotations

from airflow_provider_rayops.backends.base import ComputeBackend
from airflow_provider_rayops.config.compute import RayClusterProfile
from airflow_provider_rayops.hooks.ray_jobs_api import RayEndpoint


class RayClusterBackend(ComputeBackend):
    """An existing Ray cluster named by the Airflow connection `profile.conn_id`."""

    kind = "ray"

    def __init__(self, profile: RayClusterProfile) -> None:
        self._profile = profile

    @property
    def profile(self) -> RayClusterProfile:
        return self._profile

    def endpoint(self) -> RayEndpoint:
        from airflow_provider_rayops.hooks.ray import RayHook

        return RayHook(ray_conn_id=self._profile.conn_id).get_endpoint()

    async def aendpoint(self) -> RayEndpoint:
        from airflow_provider_rayops.hooks.ray import RayHook

        return await RayHook(ray_conn_id=self._profile.conn_id).aget_endpoint()
