"""The KubeRay custom resources rayops creates, built from a compute profile: pure data, no I/O.

    ray_job(profile, RayJobRequest(...))           # a RayJob (ray.io/v1): a cluster per job, or clusterSelector
    ray_service(profile, name=..., serve_config=)  # a RayService whose serveConfigV2 is the router + versions

The same functions feed `SubmitRayJobOperator`, `DeployRayServeOperator` and `rayops render
--backend kuberay`, so what is printed is what is sent. Every manifest they build is checked in
the tests against the KubeRay v1.7 CRD schemas, field names, types and CEL rules included.
No Airflow and no Kubernetes client here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import yaml

from airflow_provider_rayops.config.compute import RAYJOB_NAME_MAX, KubeRayProfile, PodResources, WorkerGroup

GROUP = "ray.io"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
RAYJOBS = "rayjobs"
RAYSERVICES = "rayservices"
RAYCLUSTERS = "rayclusters"
GPU_RESOURCE = "nvidia.com/gpu"
# The label KubeRay's clusterSelector must name a RayCluster by.
CLUSTER_LABEL = "ray.io/cluster"
DASHBOARD_PORT = 8265
SERVE_PORT = 8000
MANAGED_BY = "airflow-provider-rayops"
# The labels every resource rayops creates carries; `owner` is a digest of the task instance it
# belongs to, checked before a retry re-attaches to it (label values cannot hold run ids).
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_OWNER = "rayops.io/owner"
LABEL_DEPLOYMENT = "rayops.io/deployment"
LABEL_PIPELINE = "rayops.io/pipeline"
ANNOTATION_PREFIX = "rayops.io/"


@dataclasses.dataclass(frozen=True)
class RayJobRequest:
    """One Ray job to run as a RayJob: what `SubmitRayJobOperator` would send to the Jobs API,
    plus the resource's name and owner marks."""

    name: str
    job_id: str
    entrypoint: str
    runtime_env: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    entrypoint_num_cpus: float | None = None
    entrypoint_num_gpus: float | None = None
    entrypoint_resources: Mapping[str, float] | None = None
    # Seconds the task has left (its execution_timeout); the RayJob's deadline is the shorter of this and the profile's.
    deadline_s: float | None = None


def ray_job(profile: KubeRayProfile, request: RayJobRequest) -> dict[str, Any]:
    """The RayJob for one job: KubeRay starts its cluster (or picks the selected one), submits the
    entrypoint with this job id, and cleans up as the profile says."""
    spec: dict[str, Any] = {
        "entrypoint": request.entrypoint,
        "jobId": request.job_id,
        "submissionMode": "K8sJobMode",
        "metadata": dict(request.metadata),
    }
    if profile.cluster is None:  # KubeRay refuses backoffLimit with a clusterSelector
        spec["backoffLimit"] = profile.backoff_limit
    if request.runtime_env:
        # KubeRay hands this YAML to `ray job submit --runtime-env-json` as JSON; safe_dump never emits tags.
        spec["runtimeEnvYAML"] = yaml.safe_dump(dict(request.runtime_env), sort_keys=True)
    if request.entrypoint_num_cpus is not None:
        spec["entrypointNumCpus"] = request.entrypoint_num_cpus
    if request.entrypoint_num_gpus is not None:
        spec["entrypointNumGpus"] = request.entrypoint_num_gpus
    if request.entrypoint_resources:
        spec["entrypointResources"] = json.dumps(dict(request.entrypoint_resources), sort_keys=True)
    deadlines = [d for d in (profile.active_deadline_s, request.deadline_s) if d is not None]
    if deadlines:
        spec["activeDeadlineSeconds"] = max(1, int(min(deadlines)))  # an int32 field: 7200.0 is refused
    if profile.pre_running_deadline_s is not None:
        spec["preRunningDeadlineSeconds"] = profile.pre_running_deadline_s
    if profile.cluster is not None:
        # A long-lived cluster is never deleted by the jobs that use it (KubeRay refuses clean-up with a selector).
        spec["clusterSelector"] = {CLUSTER_LABEL: profile.cluster}
    else:
        spec["rayClusterSpec"] = ray_cluster_spec(profile)
        spec.update(_cleanup(profile))
    return {
        "apiVersion": API_VERSION,
        "kind": "RayJob",
        "metadata": _metadata(request.name, profile, request.labels, request.annotations),
        "spec": spec,
    }


def ray_service(
    profile: KubeRayProfile,
    *,
    name: str,
    serve_config: Mapping[str, Any],
    serve_port: int = SERVE_PORT,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The RayService of an endpoint. `serve_config` is the Serve REST config (applications,
    http_options) that the `ray` backend PUTs; KubeRay applies a change to it in place on the
    running cluster, so a canary step is an update of this field."""
    if profile.cluster is not None:
        raise ValueError("a RayService runs its own cluster: a profile with cluster cannot serve on KubeRay")
    spec: dict[str, Any] = {
        "serveConfigV2": serve_config_yaml(serve_config),
        "rayClusterConfig": ray_cluster_spec(profile, serve_port=serve_port),
    }
    # Always written (NewCluster is KubeRay's default): an update of the spec then never keeps an old strategy.
    spec["upgradeStrategy"] = {"type": profile.upgrade_strategy}
    if profile.upgrade_strategy == "NewClusterWithIncrementalUpgrade" and profile.incremental_upgrade is not None:
        steps = profile.incremental_upgrade
        spec["upgradeStrategy"]["clusterUpgradeOptions"] = {
            "gatewayClassName": steps.gateway_class,
            "stepSizePercent": steps.step_percent,
            "intervalSeconds": steps.interval_s,
            "maxSurgePercent": steps.max_surge_percent,
        }
    return {
        "apiVersion": API_VERSION,
        "kind": "RayService",
        "metadata": _metadata(name, profile, labels or {}, annotations or {}),
        "spec": spec,
    }


def service_name(app: str) -> str:
    """The RayService of the Serve application `app`: a DNS-1035 label of at most 47 characters
    (KubeRay's limit), the same for every deploy of the endpoint."""
    readable = re.sub(r"[^a-z0-9]+", "-", app.lower()).strip("-")
    digest = hashlib.sha256(app.encode()).hexdigest()[:6]
    if readable == app and len(readable) <= RAYJOB_NAME_MAX and readable[:1].isalpha():
        return readable  # already a valid name: kept as the user wrote it
    readable = readable[: RAYJOB_NAME_MAX - len(digest) - 1].strip("-")
    if not readable[:1].isalpha():
        readable = ("s" + readable)[: RAYJOB_NAME_MAX - len(digest) - 1].strip("-")
    return f"{readable}-{digest}"


def serve_config_yaml(serve_config: Mapping[str, Any]) -> str:
    """serveConfigV2's text: the Serve config as YAML (no tags, keys sorted: an unchanged config is an unchanged string)."""
    return yaml.safe_dump(dict(serve_config), sort_keys=True)


def ray_cluster_spec(profile: KubeRayProfile, *, serve_port: int | None = None) -> dict[str, Any]:
    """The RayClusterSpec of a job's (or, with the port its Serve proxy listens on, an endpoint's) own
    cluster. KubeRay builds the serve Service and its health check from the head's port named serve."""
    spec: dict[str, Any] = {
        "rayVersion": profile.ray_version,
        "headGroupSpec": {
            "rayStartParams": {},
            "template": _pod_template(profile, profile.head, container="ray-head", head=True, serve_port=serve_port),
        },
    }
    if profile.auth == "token":
        spec["authOptions"] = {"mode": "token", "secretName": profile.token_secret}
    if profile.autoscaler_on:
        spec["enableInTreeAutoscaling"] = True
    if profile.worker_groups:
        spec["workerGroupSpecs"] = [_worker_group(profile, group) for group in profile.worker_groups]
    return spec


def _worker_group(profile: KubeRayProfile, group: WorkerGroup) -> dict[str, Any]:
    return {
        "groupName": group.name,
        "replicas": group.replicas.min,
        "minReplicas": group.replicas.min,
        "maxReplicas": group.replicas.max,
        "rayStartParams": {},
        "template": _pod_template(profile, group, container="ray-worker", head=False, serve_port=None),
    }


def _pod_template(
    profile: KubeRayProfile, pod: PodResources, *, container: str, head: bool, serve_port: int | None
) -> dict[str, Any]:
    limits: dict[str, Any] = {"cpu": pod.cpu, "memory": pod.memory}
    if pod.gpu:
        limits[GPU_RESOURCE] = pod.gpu
    main: dict[str, Any] = {
        "name": container,
        "image": profile.image,
        "imagePullPolicy": profile.image_pull_policy,
        # Requests equal limits: Ray plans with what the pod is guaranteed (Guaranteed QoS, never evicted first).
        "resources": {"requests": dict(limits), "limits": limits},
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": True},
        "volumeMounts": [{"name": "ray-logs", "mountPath": "/tmp/ray"}],
    }
    if head:
        ports = [
            {"name": "gcs-server", "containerPort": 6379},
            {"name": "dashboard", "containerPort": DASHBOARD_PORT},
            {"name": "client", "containerPort": 10001},
        ]
        if serve_port is not None:
            ports.append({"name": "serve", "containerPort": serve_port})
        main["ports"] = ports
    else:
        # PyTorch's DataLoader workers share tensors through /dev/shm, which a pod's default 64 MiB starves.
        main["volumeMounts"].append({"name": "dshm", "mountPath": "/dev/shm"})
    if profile.secret_env:
        main["envFrom"] = [{"secretRef": {"name": name}} for name in profile.secret_env]
    spec: dict[str, Any] = {
        "containers": [main],
        "volumes": [{"name": "ray-logs", "emptyDir": {}}]
        + ([] if head else [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]),
    }
    if profile.service_account:
        spec["serviceAccountName"] = profile.service_account
    if pod.node_selector:
        spec["nodeSelector"] = dict(pod.node_selector)
    if pod.tolerations:
        spec["tolerations"] = [t.model_dump(exclude_none=True) for t in pod.tolerations]
    return {"spec": spec}


def _cleanup(profile: KubeRayProfile) -> dict[str, Any]:
    """How KubeRay deletes a finished job's cluster. deletionRules (1.6+) and the older
    shutdownAfterJobFinishes cannot be combined: the profile picks one."""
    cleanup = profile.cleanup
    if cleanup.legacy:
        return {"shutdownAfterJobFinishes": True, "ttlSecondsAfterFinished": cleanup.after_s}
    rules: list[dict[str, Any]] = [
        {"policy": "DeleteCluster", "condition": {"jobStatus": "SUCCEEDED", "ttlSeconds": cleanup.after_s}},
        {"policy": "DeleteCluster", "condition": {"jobStatus": "FAILED", "ttlSeconds": cleanup.failed_after_s}},
        # A job that never ran (submission failed, a deadline passed) has no jobStatus to match.
        {"policy": "DeleteCluster", "condition": {"jobDeploymentStatus": "Failed", "ttlSeconds": cleanup.failed_after_s}},
    ]
    if cleanup.delete_job_after_s is not None:
        rules += [
            {"policy": "DeleteSelf", "condition": {"jobStatus": status, "ttlSeconds": cleanup.delete_job_after_s}}
            for status in ("SUCCEEDED", "FAILED")
        ]
        rules.append(
            {"policy": "DeleteSelf", "condition": {"jobDeploymentStatus": "Failed", "ttlSeconds": cleanup.delete_job_after_s}}
        )
    return {"deletionStrategy": {"deletionRules": rules}}


def _metadata(name: str, profile: KubeRayProfile, labels: Mapping[str, str], annotations: Mapping[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": profile.namespace, "labels": {LABEL_MANAGED_BY: MANAGED_BY, **labels}}
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta
