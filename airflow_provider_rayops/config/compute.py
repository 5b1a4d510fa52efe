"""Compute profiles: where a pipeline's Ray jobs run.

A profile is named in `dag_configs/defaults.yaml` (or beside a pipeline) and picked by
`compute: <name>`. The same pipeline YAML runs on every profile; only this changes.
This module imports neither Airflow nor Ray: it is read by the DAG factory, the
operators and the jobs alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

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


class PodResources(_Strict):
    """Resources of one Ray pod (head or worker)."""

    cpu: str | int = Field(default=1, description="CPU request and limit, in Kubernetes quantity form (2, '500m').")
    memory: str = Field(default="4Gi", description="Memory request and limit, in Kubernetes quantity form ('8Gi').")
    gpu: int = Field(default=0, ge=0, description="NVIDIA GPUs per pod (nvidia.com/gpu).")
    node_selector: dict[str, str] = Field(default_factory=dict, description="Node labels the pod must land on.")
    tolerations: list[Toleration] = Field(
        default_factory=list, description="Taints the pod tolerates (GPU nodes are often tainted)."
    )


class WorkerGroup(PodResources):
    """One group of identical Ray worker pods."""

    name: str = Field(description="Group name, unique within the profile (used in pod names).")
    replicas: ReplicaRange = Field(default_factory=ReplicaRange, description="Autoscaling bounds for this group.")


class KubeRayProfile(_Strict):
    """A Ray cluster on Kubernetes, created per job through KubeRay custom resources."""

    backend: Literal["kuberay"] = Field(description="Run as KubeRay RayJob / RayService resources on Kubernetes.")
    conn_id: str = Field(
        default="kubernetes_default",
        pattern=CONN_ID,
        description="Airflow connection of the cncf-kubernetes provider for the target cluster.",
    )
    namespace: str = Field(default="default", description="Kubernetes namespace of the Ray resources.")
    image: str = Field(description="Container image with rayops and the pipeline's code (see docker/).")
    service_account: str | None = Field(default=None, description="Service account for the Ray pods (for S3 or registry access).")
    head: PodResources = Field(default_factory=PodResources, description="The Ray head pod.")
    worker_groups: list[WorkerGroup] = Field(default_factory=list, description="Ray worker groups; GPUs go here.")
    scaling: ScalingSpec = Field(default_factory=ScalingSpec, description=_SCALING_DESCRIPTION)


ComputeProfile = Annotated[LocalProfile | RayClusterProfile | KubeRayProfile, Field(discriminator="backend")]
"""One of the profile kinds above, chosen by its `backend` key."""
