"""KubeRay resources through the cncf-kubernetes provider's hooks: create, read, patch, delete.

`KubeRayClient` (blocking, for operators) goes through `KubernetesHook`'s CustomObjectsApi and
`AsyncKubeRayClient` (for triggers) through `AsyncKubernetesHook`'s kubernetes_asyncio client.
Both read the cluster from an Airflow Kubernetes connection (a kubeconfig, or `in_cluster`),
and turn the API server's answers into this package's errors, with what to do about them:
401/403 name the RBAC rule the service account lacks, 409 is `ResourceExists`, 400/422 is
`ResourceRefused` with the server's own reasons. A resource that is not there is None.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airflow_provider_rayops.backends.kuberay.manifests import GROUP, VERSION
from airflow_provider_rayops.hooks.ray_jobs_api import BackendNotAvailable, RayopsComputeError

PROVIDER_MISSING = (
    "the kuberay backend talks to Kubernetes through apache-airflow-providers-cncf-kubernetes, which is not "
    "installed: pip install 'airflow-provider-rayops[kubernetes]'"
)


class ResourceExists(RayopsComputeError):
    """A resource of that name exists already (another try or process created it first)."""


class ResourceRefused(RayopsComputeError):
    """The API server refused the resource (schema or admission): retrying the same will not help."""


def _problem(exc: Exception, *, verb: str, what: str, conn_id: str, namespace: str) -> RayopsComputeError | None:
    """Our error for an API exception (None: 404, the resource is not there)."""
    status = getattr(exc, "status", None)
    if status == 404:
        return None
    if status == 401:
        return BackendNotAvailable(
            f"Kubernetes did not accept the credentials of connection {conn_id} to {verb} {what} (HTTP 401): "
            "its token or certificate is wrong or expired"
        )
    if status == 403:
        return BackendNotAvailable(
            f"Kubernetes refused to {verb} {what} in namespace {namespace} (HTTP 403) for connection {conn_id}: "
            f"its service account needs the verb {verb} on {GROUP} {what.split()[0]} there (helm/rayops's Role grants it)"
        )
    message = _status_message(exc)
    if status == 409:
        return ResourceExists(f"{what} exists already in namespace {namespace}: {message}")
    if status in (400, 422):
        return ResourceRefused(f"Kubernetes refused {what} in namespace {namespace}: {message}")
    if status is not None:
        return BackendNotAvailable(f"the Kubernetes API answered HTTP {status} to {verb} {what}: {message}")
    return BackendNotAvailable(
        f"cannot reach the Kubernetes API of connection {conn_id} to {verb} {what}: {type(exc).__name__}: {exc}"
    )


def _status_message(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    try:
        return str(json.loads(body or "null").get("message") or body)
    except (TypeError, ValueError, AttributeError):
        return str(body or getattr(exc, "reason", "") or exc)


class KubeRayClient:
    """ray.io/v1 objects of one namespace, through the Airflow Kubernetes connection `conn_id`."""

    def __init__(self, conn_id: str, namespace: str) -> None:
        self.conn_id = conn_id
        self.namespace = namespace
        try:
            from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook
        except ImportError:
            raise BackendNotAvailable(PROVIDER_MISSING) from None
        self._hook = KubernetesHook(conn_id=conn_id)

    @property
    def _api(self) -> Any:
        try:
            return self._hook.custom_object_client
        except Exception as exc:  # a connection that cannot make a client: kubeconfig missing or broken
            raise BackendNotAvailable(
                f"cannot build a Kubernetes client from connection {self.conn_id}: {type(exc).__name__}: {exc}"
            ) from None

    def _call(self, verb: str, what: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(group=GROUP, version=VERSION, namespace=self.namespace, **kwargs)
        except RayopsComputeError:
            raise
        except Exception as exc:
            problem = _problem(exc, verb=verb, what=what, conn_id=self.conn_id, namespace=self.namespace)
            if problem is None:
                return None
            raise problem from None

    def get(self, plural: str, name: str) -> dict[str, Any] | None:
        return self._call("get", f"{plural} {name}", self._api.get_namespaced_custom_object, plural=plural, name=name)

    def list(self, plural: str, *, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        """The objects carrying every one of `labels`."""
        selector = ",".join(f"{key}={value}" for key, value in labels.items())
        found = self._call(
            "list",
            f"{plural} labelled {selector}",
            self._api.list_namespaced_custom_object,
            plural=plural,
            label_selector=selector,
        )
        return list((found or {}).get("items") or [])

    def create(self, plural: str, body: Mapping[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        created = self._call(
            "create", f"{plural} {name}", self._api.create_namespaced_custom_object, plural=plural, body=dict(body)
        )
        if created is None:
            raise BackendNotAvailable(
                f"the Kubernetes API has no {GROUP}/{VERSION} {plural}: is the KubeRay operator (its CRDs) installed?"
            )
        return created

    def replace_spec(self, plural: str, name: str, spec: Mapping[str, Any]) -> dict[str, Any] | None:
        """Replace the object's whole spec (a JSON patch, so keys the new spec lacks are gone, not
        merged as a merge patch would leave them); None if the object is gone."""
        return self._call(
            "patch",
            f"{plural} {name}",
            self._api.patch_namespaced_custom_object,
            plural=plural,
            name=name,
            body=[{"op": "replace", "path": "/spec", "value": dict(spec)}],
            # The client would send a list as a merge patch (its only content type for custom objects).
            _content_type="application/json-patch+json",
        )

    def delete(self, plural: str, name: str) -> bool:
        """Delete the object and, in the background, what it owns (its Ray cluster); False if it was gone."""
        deleted = self._call(
            "delete",
            f"{plural} {name}",
            self._api.delete_namespaced_custom_object,
            plural=plural,
            name=name,
            propagation_policy="Background",
        )
        return deleted is not None


class AsyncKubeRayClient:
    """The same objects from a trigger: no blocking I/O in the event loop. Use as `async with`."""

    def __init__(self, conn_id: str, namespace: str) -> None:
        self.conn_id = conn_id
        self.namespace = namespace
        try:
            from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook
        except ImportError:
            raise BackendNotAvailable(PROVIDER_MISSING) from None
        self._hook = AsyncKubernetesHook(conn_id=conn_id)
        self._context: Any = None
        self._api: Any = None

    async def __aenter__(self) -> AsyncKubeRayClient:
        from kubernetes_asyncio.client import CustomObjectsApi

        self._context = self._hook.get_conn()
        try:
            api_client = await self._context.__aenter__()
        except Exception as exc:
            raise BackendNotAvailable(
                f"cannot build a Kubernetes client from connection {self.conn_id}: {type(exc).__name__}: {exc}"
            ) from None
        self._api = CustomObjectsApi(api_client)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._context is not None:
            await self._context.__aexit__(*exc_info)

    async def _call(self, verb: str, what: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return await fn(group=GROUP, version=VERSION, namespace=self.namespace, **kwargs)
        except Exception as exc:
            problem = _problem(exc, verb=verb, what=what, conn_id=self.conn_id, namespace=self.namespace)
            if problem is None:
                return None
            raise problem from None

    async def get(self, plural: str, name: str) -> dict[str, Any] | None:
        return await self._call("get", f"{plural} {name}", self._api.get_namespaced_custom_object, plural=plural, name=name)

    async def patch(self, plural: str, name: str, body: Mapping[str, Any]) -> dict[str, Any] | None:
        return await self._call(
            "patch", f"{plural} {name}", self._api.patch_namespaced_custom_object, plural=plural, name=name, body=dict(body)
        )

    async def delete(self, plural: str, name: str) -> bool:
        deleted = await self._call(
            "delete",
            f"{plural} {name}",
            self._api.delete_namespaced_custom_object,
            plural=plural,
            name=name,
            propagation_policy="Background",
        )
        return deleted is not None
