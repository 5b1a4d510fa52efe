"""A pipeline's endpoint as a KubeRay RayService: the Serve config lives in its `serveConfigV2`.

`RayServiceServe` has the interface `serving.rollout.Rollout` uses for a cluster's Serve REST API
(`details`, `put`, `proxy_url`), so the same rollout (first deploy, canary steps, rollback) runs on
KubeRay unchanged:

- `put(config)` writes the router and version applications into `spec.serveConfigV2` (the
  RayService is created by the first one). KubeRay applies a changed serveConfigV2 in place on
  the running cluster, so a canary step is an update of the router's weights in that field. The
  cluster spec from the profile is written too: a change there (image, pods) is a cluster-level
  change, done by the profile's `upgrade_strategy` (NewCluster by default).
- `details()` reads what KubeRay reports: `status.activeServiceStatus.applicationStatuses`
  (RUNNING, DEPLOYING, DEPLOY_FAILED, UNHEALTHY) with their deployments. Until KubeRay has
  observed the latest spec and the `Ready` condition is True, every application reads as
  DEPLOYING, so a rollout waits for both; an application KubeRay still reports after it left the
  config reads as DELETING, so a rollout waits for its replicas to go.
- `proxy_url(port)`: the profile's `serve_url`, else the RayService's serve Service in the cluster.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from airflow_provider_rayops.backends.kuberay import KubeRayBackend
from airflow_provider_rayops.backends.kuberay.client import ResourceRefused
from airflow_provider_rayops.backends.kuberay.manifests import DASHBOARD_PORT, RAYSERVICES, SERVE_PORT, ray_service
from airflow_provider_rayops.hooks.ray_serve_api import ServeNotAvailable

# Ready=False reasons after which KubeRay does not go on trying (validation, the initializing timeout).
REFUSED_REASONS = ("ValidationFailed", "InitializingTimeout")


class RayServiceServe:
    """The Serve config of RayService `name` in the profile's namespace."""

    def __init__(self, backend: KubeRayBackend, name: str, *, labels: Mapping[str, str] | None = None) -> None:
        self.backend = backend
        self.profile = backend.profile
        self.name = name
        self.labels = dict(labels or {})
        self.kube = backend.client()
        # KubeRay's head Service of a RayService follows its active cluster: messages name it.
        self.endpoint = backend.cluster_endpoint(f"http://{self._service('head')}:{DASHBOARD_PORT}")

    def _service(self, kind: str) -> str:
        return f"{self.name}-{kind}-svc.{self.profile.namespace}.svc.cluster.local"

    def proxy_url(self, port: int) -> str:
        return self.profile.serve_url or f"http://{self._service('serve')}:{port}"

    def details(self) -> dict[str, Any]:
        found = self.kube.get(RAYSERVICES, self.name)
        if found is None:
            return {"applications": {}}
        config = yaml.safe_load((found.get("spec") or {}).get("serveConfigV2") or "") or {}
        status = found.get("status") or {}
        reported = (status.get("activeServiceStatus") or {}).get("applicationStatuses") or {}
        generation = (found.get("metadata") or {}).get("generation")
        observed = status.get("observedGeneration") == generation
        conditions = {c.get("type"): c for c in status.get("conditions") or []}
        ready = conditions.get("Ready", {}).get("status") == "True"
        refused = conditions.get("Ready", {})
        if refused.get("status") == "False" and refused.get("reason") in REFUSED_REASONS:
            raise ServeNotAvailable(
                f"KubeRay gave up on RayService {self.profile.namespace}/{self.name} ({refused['reason']}): {refused.get('message') or 'no message'}"
            )
        # During a cluster upgrade the statuses are the old cluster's; Serve runs the new config on the pending one.
        upgrading = conditions.get("UpgradeInProgress", {}).get("status") == "True"
        apps: dict[str, Any] = {}
        for app in config.get("applications") or []:
            state = reported.get(app["name"]) or {}
            status_now = state.get("status") or "DEPLOYING"
            if not observed or upgrading or (status_now != "DEPLOY_FAILED" and not ready):
                status_now = "DEPLOYING"  # KubeRay has not caught up with this spec, or the service is not Ready
            apps[app["name"]] = {
                "status": status_now,
                "message": state.get("message") or "",
                "deployed_app_config": app,
                "deployments": state.get("serveDeploymentStatuses") or {},
                # Unknown here: a rollout tells a fresh DEPLOY_FAILED from a stale one by its timer alone.
                "last_deployed_time_s": None,
            }
        for name, state in reported.items():
            if name not in apps:  # left the config; KubeRay still reports it while Serve removes it
                apps[name] = {"status": "DELETING", "message": state.get("message") or ""}
        return {"http_options": config.get("http_options") or {}, "applications": apps}

    def put(self, config: Mapping[str, Any]) -> None:
        port = int((config.get("http_options") or {}).get("port") or SERVE_PORT)
        manifest = ray_service(self.profile, name=self.name, serve_config=config, serve_port=port, labels=self.labels)
        try:
            if self.kube.get(RAYSERVICES, self.name) is None:
                self.kube.create(RAYSERVICES, manifest)
            else:
                self.kube.replace_spec(RAYSERVICES, self.name, manifest["spec"])
        except ResourceRefused as exc:
            raise ServeNotAvailable(str(exc)) from None
