"""Compute profiles: where a pipeline's Ray jobs run.

A profile is named in `dag_configs/defaults.yaml` (or beside a pipeline) and picked by
`compute: <name>`. The same pipeline YAML runs on every profile; only this changes.
This module imports neither Airflow nor Ray: it is read by the DAG factory, the
operators and the jobs alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# An environment variable name, or a prefix ending in * (never a bare *: that would be everything).
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*\*?$"


def env_listed(name: str, patterns: Sequence[str]) -> bool:
    """Whether an environment variable is among `patterns` (ENV_NAME: `NAME`, or `PREFIX_*`)."""
    return any(name == p or (p.endswith("*") and name.startswith(p[:-1])) for p in patterns)


# An Airflow connection id (letters, digits, _ . -): nothing a template engine would act on.
CONN_ID = r"^[A-Za-z0-9_.-]{1,250}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScalingSpec(_Strict):
    """How many Ray Train workers a training run uses and what each gets."""

    num_workers: int = Field(default=1, ge=1, description="Data-parallel Ray Train workers.")
    use_gpu: bool = Field(default=False, description="Give each worker a GPU (the profile's machines must have GPUs).")
    resources_per_worker: dict[str, float] = Field(
        default_factory=dict, description="Ray resources per worker, e.g. {CPU: 2, GPU: 1}."
    )


_SCALING_DESCRIPTION = (
    "Training workers on this profile (num_workers, use_gpu, resources_per_worker); "
    "a pipeline's train.scaling overrides single keys."
)


CodeMode = Literal["auto", "image", "ship"]
DEFAULT_CODE_MAX_MB = 20.0
_CODE_MAX_MB_DESCRIPTION = (
    "Largest size (MiB, before compression) of the pipeline's own training code shipped with each job "
    "(the package or module of train.entrypoint, after excludes); more is refused before anything is sent."
)


class LocalProfile(_Strict):
    """An embedded Ray head on 127.0.0.1, started on first use and reused after."""

    backend: Literal["local"] = Field(description="Run on an embedded Ray head that rayops starts on this machine.")
    num_cpus: int | None = Field(
        default=None, ge=1, description="CPUs the embedded head offers to Ray; default: every core of this machine."
    )
    num_gpus: int | None = Field(default=None, ge=0, description="GPUs the embedded head offers; default: what Ray detects.")
    object_store_mb: int | None = Field(
        default=None,
        ge=80,
        description="Memory of the embedded head's object store, in MiB; default: what Ray picks (30% of this machine's "
        "memory). A snapshot whose encoded splits take more than half of it trains streamed, read from storage each epoch.",
    )
    state_dir: str | None = Field(
        default=None,
        description="Folder holding the head's state, logs and auth token; default: $RAYOPS_HOME/ray (RAYOPS_HOME defaults to ~/.rayops).",
    )
    env: list[Annotated[str, Field(pattern=ENV_NAME)]] = Field(
        default_factory=list,
        description="More environment variables the head (and so every job) inherits from the process that starts "
        "it: names, or prefixes ending in * (e.g. HF_*). Only defaults.yaml may set it. Secrets belong in "
        "connections, not here.",
    )
    scaling: ScalingSpec = Field(default_factory=ScalingSpec, description=_SCALING_DESCRIPTION)
    code_max_mb: float = Field(default=DEFAULT_CODE_MAX_MB, gt=0, description=_CODE_MAX_MB_DESCRIPTION)


class RayClusterProfile(_Strict):
    """An existing Ray cluster, reached through its dashboard's Jobs API."""

    backend: Literal["ray"] = Field(description="Submit to an existing Ray cluster through the Jobs API.")
    conn_id: str = Field(
        default="rayops_ray_default",
        pattern=CONN_ID,
        description="Airflow connection of type rayops_ray: host is the dashboard address, password the Ray auth token.",
    )
    code: CodeMode = Field(
        default="auto",
        description="How jobs get their code on this cluster. ship: rayops' job code and the pipeline's own modules "
        "are uploaded with every job (content-addressed, sent once). image: nothing is uploaded; the cluster's image "
        "must already have airflow-provider-rayops at this very version and the pipeline's own modules (checked "
        "before each job). auto: the cluster is probed first "
        "and rayops' job code is uploaded only when the image lacks this version; the pipeline's own modules are "
        "always uploaded. Python, Ray and the jobs' libraries are checked in every mode.",
    )
    code_max_mb: float = Field(default=DEFAULT_CODE_MAX_MB, gt=0, description=_CODE_MAX_MB_DESCRIPTION)
    scaling: ScalingSpec = Field(default_factory=ScalingSpec, description=_SCALING_DESCRIPTION)


class Toleration(_Strict):
    """A Kubernetes toleration for the pods of one Ray group."""

    key: str | None = Field(default=None, description="Taint key the toleration matches; empty matches every key.")
    operator: Literal["Equal", "Exists"] = Field(
        default="Equal", description="Equal matches key and value; Exists matches the key alone."
    )
    value: str | None = Field(default=None, description="Taint value to match when operator is Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches every effect."
    )


class ReplicaRange(_Strict):
    """How many pods of a worker group the Ray autoscaler may run."""

    min: int = Field(default=0, ge=0, description="Fewest pods of this group kept running.")
    max: int = Field(default=1, ge=1, description="Most pods of this group the autoscaler may start.")

    @model_validator(mode="after")
    def _min_not_above_max(self) -> ReplicaRange:
        if self.min > self.max:
            raise ValueError(f"replicas.min ({self.min}) is above replicas.max ({self.max})")
        return self


# A Kubernetes object name (RFC 1123 subdomain) and a label key or value.
K8S_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
LABEL_VALUE = r"^(([A-Za-z0-9][-A-Za-z0-9_.]{0,61})?[A-Za-z0-9])?$"
LABEL_KEY = r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
# KubeRay 1.7 (ray-operator/controllers/ray/utils/validation.go) wants RayJob, RayService and RayCluster
# names to be DNS-1035 labels, a RayCluster's at most 53 characters, and a RayJob's or RayService's at
# most 47 (the cluster made from it gets a 6-character suffix).
DNS_1035 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
RAYCLUSTER_NAME_MAX = 53
RAYJOB_NAME_MAX = 47
# A Kubernetes resource quantity, with the pattern of the KubeRay CRDs' resource fields: 2, 500m, 8Gi, 1.5e3.
QUANTITY = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"


class PodResources(_Strict):
    """Resources of one Ray pod (head or worker)."""

    cpu: Annotated[str, Field(pattern=QUANTITY)] | Annotated[int, Field(ge=1)] = Field(
        default=1, description="CPU request and limit, in Kubernetes quantity form (2, '500m')."
    )
    memory: str = Field(
        default="4Gi", pattern=QUANTITY, description="Memory request and limit, in Kubernetes quantity form ('8Gi')."
    )
    gpu: int = Field(default=0, ge=0, description="NVIDIA GPUs per pod (nvidia.com/gpu).")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pod must land on.")
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Taints the pod tolerates (GPU nodes are often tainted)."
    )


class WorkerGroup(PodResources):
    """One group of identical Ray worker pods."""

    name: str = Field(
        pattern=DNS_LABEL,
        description="Group name, unique within the profile (used in pod names: lower case, digits and -).",
    )
    replicas: ReplicaRange = Field(default_factory=ReplicaRange, description="Autoscaling bounds for this group.")


class Cleanup(_Strict):
    """When KubeRay deletes the Ray cluster of a finished RayJob, and the RayJob itself."""

    after_s: int = Field(
        default=300,
        ge=0,
        le=2**31 - 1,
        description="Seconds after a job succeeded before its Ray cluster is deleted. Airflow reads the job's last "
        "log lines and result from the cluster's dashboard when the job ends, so keep it above a minute.",
    )
    failed_after_s: int = Field(
        default=3600,
        ge=0,
        le=2**31 - 1,
        description="Seconds after a job failed (or could not be deployed) before its Ray cluster is deleted: time to look at it.",
    )
    delete_job_after_s: int | None = Field(
        default=86400,
        ge=0,
        le=2**31 - 1,
        description="Seconds after the job ended before the RayJob resource itself is deleted (None: kept until "
        "someone deletes it). Must not be shorter than after_s and failed_after_s.",
    )
    legacy: bool = Field(
        default=False,
        description="For KubeRay operators older than 1.6, which lack deletionRules: shutdownAfterJobFinishes with "
        "ttlSecondsAfterFinished = after_s instead (one delay for every outcome; the RayJob itself is kept).",
    )

    @model_validator(mode="after")
    def _job_outlives_its_cluster(self) -> Cleanup:
        if self.delete_job_after_s is not None and self.delete_job_after_s < max(self.after_s, self.failed_after_s):
            raise ValueError(
                "delete_job_after_s must be at least after_s and failed_after_s: KubeRay deletes the cluster before the RayJob"
            )
        return self


class IncrementalUpgrade(_Strict):
    """How a RayService moves traffic to a new cluster step by step (upgrade_strategy
    NewClusterWithIncrementalUpgrade, through the Gateway API)."""

    gateway_class: str = Field(pattern=K8S_NAME, description="The GatewayClass of the gateway controller that splits traffic.")
    step_percent: int = Field(default=10, ge=1, le=100, description="Share of traffic moved to the new cluster at each step.")
    interval_s: int = Field(default=30, ge=1, le=2**31 - 1, description="Seconds between two steps.")
    max_surge_percent: int = Field(
        default=100, ge=0, le=100, description="Most extra capacity the new cluster may add while traffic moves."
    )

    @model_validator(mode="after")
    def _step_within_surge(self) -> IncrementalUpgrade:
        if self.step_percent > self.max_surge_percent:  # KubeRay's ValidateClusterUpgradeOptions
            raise ValueError(f"step_percent ({self.step_percent}) must not exceed max_surge_percent ({self.max_surge_percent})")
        return self


class KubeRayProfile(_Strict):
    """A Ray cluster on Kubernetes, created per job through KubeRay custom resources."""

    backend: Literal["kuberay"] = Field(description="Run as KubeRay RayJob / RayService resources on Kubernetes.")
    conn_id: str = Field(
        default="kubernetes_default",
        pattern=CONN_ID,
        description="Airflow connection of the cncf-kubernetes provider for the target cluster (a kubeconfig, or "
        "in_cluster: true when Airflow runs in that cluster).",
    )
    namespace: str = Field(default="default", pattern=DNS_LABEL, description="Kubernetes namespace of the Ray resources.")
    image: str = Field(
        description="Container image of the Ray pods, with airflow-provider-rayops[jobs] at this very version and the "
        "pipeline's own modules (see docker/ray.Dockerfile)."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        default="IfNotPresent", description="When the kubelet pulls the image."
    )
    ray_version: str = Field(
        default="2.60.0",
        pattern=r"^[0-9]+\.[0-9]+\.[0-9]+$",
        description="Ray version inside the image (KubeRay's rayVersion; the autoscaler sidecar matches it).",
    )
    service_account: str | None = Field(
        default=None, pattern=K8S_NAME, description="Service account for the Ray pods (for S3 or registry access)."
    )
    secret_env: list[Annotated[str, Field(pattern=K8S_NAME)]] = Field(
        default_factory=list,
        description="Kubernetes Secrets whose keys become environment variables of every Ray container (envFrom): "
        "storage and MLflow credentials on this backend. Airflow connections' secrets are not copied into the "
        "RayJob, where anyone who can read RayJobs would see them.",
    )
    auth: Literal["token", "disabled"] = Field(
        default="token",
        description="Ray token authentication of the clusters rayops creates (KubeRay authOptions). token: every "
        "cluster uses the token in token_secret, which Airflow reads from $RAYOPS_KUBERAY_TOKEN to follow the job.",
    )
    token_secret: str = Field(
        default="rayops-ray-token",
        pattern=K8S_NAME,
        description="Secret (key auth_token) holding the Ray token of every cluster; helm/rayops creates it.",
    )
    head: PodResources = Field(default_factory=PodResources, description="The Ray head pod.")
    worker_groups: list[WorkerGroup] = Field(default_factory=list, description="Ray worker groups; GPUs go here.")
    autoscaling: bool | None = Field(
        default=None,
        description="KubeRay's in-tree Ray autoscaler (enableInTreeAutoscaling); default: on when a worker group's "
        "replicas.min differs from its replicas.max.",
    )
    cluster: str | None = Field(
        default=None,
        pattern=DNS_1035,
        max_length=RAYCLUSTER_NAME_MAX,
        description="Run every job on this existing long-lived RayCluster (in namespace) instead of a cluster per "
        "job (RayJob clusterSelector ray.io/cluster); head, worker_groups and cleanup are then not used.",
    )
    active_deadline_s: int | None = Field(
        default=None,
        ge=1,
        le=2**31 - 1,
        description="Longest a RayJob may run, cluster start included (activeDeadlineSeconds); a task's "
        "execution_timeout, when shorter, is used instead.",
    )
    pre_running_deadline_s: int | None = Field(
        default=None,
        ge=1,
        le=2**31 - 1,
        description="Longest from creation until the job runs (preRunningDeadlineSeconds): pods pending on GPU "
        "nodes that never come fail the job instead of waiting for ever.",
    )
    backoff_limit: int = Field(
        default=0,
        ge=0,
        le=2**31 - 1,
        description="Times KubeRay retries a failed job on a new cluster before the RayJob fails (Airflow's "
        "retries come on top).",
    )
    cleanup: Cleanup = Field(default_factory=Cleanup, description="When finished clusters and RayJobs are deleted.")
    upgrade_strategy: Literal["NewCluster", "NewClusterWithIncrementalUpgrade", "None"] = Field(
        default="NewCluster",
        description="RayService upgradeStrategy for changes the Serve config cannot apply in place (image, pods). "
        "NewClusterWithIncrementalUpgrade needs the Gateway API CRDs and a gateway controller.",
    )
    serve_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/]+$",
        description="Where Airflow (and the demo client) reach an endpoint's Serve proxy, e.g. through an ingress: "
        "http(s)://host[:port]. Default: the RayService's serve Service, "
        "http://<service>-serve-svc.<namespace>.svc.cluster.local:<http_port>, reachable from inside the cluster.",
    )
    incremental_upgrade: IncrementalUpgrade | None = Field(
        default=None, description="Steps of a NewClusterWithIncrementalUpgrade (needed with it, unused otherwise)."
    )
    scaling: ScalingSpec = Field(default_factory=ScalingSpec, description=_SCALING_DESCRIPTION)

    @property
    def autoscaler_on(self) -> bool:
        """Whether the Ray autoscaler runs: as `autoscaling` says, else when some group may change size."""
        if self.autoscaling is not None:
            return self.autoscaling
        return any(group.replicas.min != group.replicas.max for group in self.worker_groups)

    @model_validator(mode="after")
    def _one_kind_of_cluster(self) -> KubeRayProfile:
        names = [group.name for group in self.worker_groups]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"worker group names must be unique; repeated: {', '.join(duplicates)}")
        if self.cluster is not None and self.worker_groups:
            raise ValueError("cluster runs jobs on an existing RayCluster: worker_groups cannot be given with it")
        if self.cluster is not None and self.backoff_limit:
            raise ValueError("cluster runs jobs on an existing RayCluster, where KubeRay refuses backoff_limit: leave it 0")
        if self.upgrade_strategy == "NewClusterWithIncrementalUpgrade":
            if self.incremental_upgrade is None:
                raise ValueError(
                    "upgrade_strategy NewClusterWithIncrementalUpgrade needs incremental_upgrade (gateway_class at least)"
                )
            if not self.autoscaler_on:
                raise ValueError(
                    "upgrade_strategy NewClusterWithIncrementalUpgrade needs the Ray autoscaler (KubeRay refuses it without)"
                )
        if self.auth == "token" and tuple(int(p) for p in self.ray_version.split(".")) < (2, 52, 0):
            raise ValueError(f"auth: token needs Ray 2.52.0 or later (KubeRay refuses it), and ray_version is {self.ray_version}")
        return self


ComputeProfile = Annotated[LocalProfile | RayClusterProfile | KubeRayProfile, Field(discriminator="backend")]
"""One of the profile kinds above, chosen by its `backend` key."""
