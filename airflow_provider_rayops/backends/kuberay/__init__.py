"""The `kuberay` backend: each job a KubeRay RayJob, each endpoint a RayService (ray.io/v1, KubeRay 1.7).

Unlike `local` and `ray` there is no dashboard to submit to before the job exists: KubeRay starts
a Ray cluster per RayJob (or picks the profile's long-lived `cluster`) and submits the entrypoint
itself. So the operator creates the resource (`client.KubeRayClient`, through the cncf-kubernetes
provider's hook) and follows its status; the job's log and result are read from the dashboard
KubeRay reports in the status, with the token of `token_secret` (in Airflow: $RAYOPS_KUBERAY_TOKEN).

Code: the pods run the profile's image, which must hold airflow-provider-rayops at this version
and the pipeline's own modules; nothing is uploaded (there is no cluster to upload to yet).
Secrets: a RayJob is readable by whoever may read RayJobs, so the connections' credentials are
not put in it; the pods get theirs from the profile's `secret_env` Secrets or service account.
"""

from __future__ import annotations

import os

from airflow_provider_rayops.backends.base import ComputeBackend
from airflow_provider_rayops.config.compute import KubeRayProfile
from airflow_provider_rayops.hooks.ray_jobs_api import BackendNotAvailable, RayEndpoint

# Where Airflow finds the Ray token of the clusters rayops creates (helm/rayops wires it from token_secret).
TOKEN_ENV = "RAYOPS_KUBERAY_TOKEN"


class KubeRayBackend(ComputeBackend):
    """Jobs as RayJobs in the profile's namespace, through its Kubernetes connection."""

    kind = "kuberay"

    def __init__(self, profile: KubeRayProfile) -> None:
        self._profile = profile

    @property
    def profile(self) -> KubeRayProfile:
        return self._profile

    def endpoint(self) -> RayEndpoint:
        raise BackendNotAvailable(
            "a kuberay profile has no dashboard to submit to: each job is a RayJob with a cluster of its own "
            "(SubmitRayJobOperator creates it); its dashboard is in the RayJob's status"
        )

    async def aendpoint(self) -> RayEndpoint:
        return self.endpoint()

    def cluster_endpoint(self, dashboard_url: str) -> RayEndpoint:
        """The dashboard of a cluster KubeRay started, with the token Airflow holds for it."""
        token = os.environ.get(TOKEN_ENV) if self._profile.auth == "token" else None
        return RayEndpoint(dashboard_url=dashboard_url, token=token or None)

    def client(self):  # -> client.KubeRayClient; imported here: the cncf provider is an extra
        from airflow_provider_rayops.backends.kuberay.client import KubeRayClient

        return KubeRayClient(self._profile.conn_id, self._profile.namespace)

    def async_client(self):  # -> client.AsyncKubeRayClient
        from airflow_provider_rayops.backends.kuberay.client import AsyncKubeRayClient

        return AsyncKubeRayClient(self._profile.conn_id, self._profile.namespace)
