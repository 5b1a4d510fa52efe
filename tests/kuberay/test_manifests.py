"""Every RayJob and RayService the kuberay backend builds validates against KubeRay v1.7's own CRDs.

The CRDs are read from ../shared/kuberay/crds (tests/fixtures/kuberay_crds.py): their OpenAPI
schemas with unknown fields refused (the API server would drop them without a word) and their CEL
rules evaluated. The profiles are the examples this repository ships (dag_configs/defaults.yaml
and the Helm chart's values) and variants of them that reach every branch of the builder.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pydantic
import pytest
import yaml

from airflow_provider_rayops.backends import parse_profile
from airflow_provider_rayops.backends.kuberay.manifests import GPU_RESOURCE, RayJobRequest, ray_job, ray_service
from airflow_provider_rayops.config.compute import RAYJOB_NAME_MAX, KubeRayProfile
from airflow_provider_rayops.operators.job_spec import JobIdentity
from tests.fixtures import kuberay_crds
from tests.fixtures.kube_api import _kuberay_validation

ROOT = Path(__file__).resolve().parents[2]


def _example_profiles() -> dict[str, dict]:
    """The kuberay profiles this repository ships, by where they come from."""
    found = {}
    defaults = yaml.safe_load((ROOT / "dag_configs" / "defaults.yaml").read_text())
    for name, profile in defaults["compute_profiles"].items():
        if profile.get("backend") == "kuberay":
            found[f"dag_configs/defaults.yaml:{name}"] = profile
    values = yaml.safe_load((ROOT / "helm" / "rayops" / "values.yaml").read_text())
    for name, profile in (values.get("computeProfiles") or {}).items():
        if profile.get("backend") == "kuberay":
            found[f"helm/rayops/values.yaml:{name}"] = profile
    return found


EXAMPLES = _example_profiles()
GPU = next(iter(EXAMPLES.values()))
VARIANTS = {
    "legacy clean-up (KubeRay < 1.6)": {**GPU, "cleanup": {"legacy": True, "after_s": 120}},
    "RayJobs kept until deleted": {**GPU, "cleanup": {"after_s": 0, "failed_after_s": 0, "delete_job_after_s": None}},
    "fixed size, no autoscaler, no auth": {
        **GPU,
        "auth": "disabled",
        "worker_groups": [{"name": "cpu", "replicas": {"min": 2, "max": 2}, "cpu": "500m", "memory": "2Gi"}],
    },
    "spot and GPU pools, secrets, deadlines": {
        **GPU,
        "service_account": "ray-jobs",
        "secret_env": ["minio-credentials", "mlflow-credentials"],
        "active_deadline_s": 7200,
        "pre_running_deadline_s": 900,
        "backoff_limit": 2,
        "image_pull_policy": "Always",
        "worker_groups": [
            *GPU["worker_groups"],
            {
                "name": "spot-cpu",
                "replicas": {"min": 0, "max": 10},
                "cpu": 4,
                "memory": "16Gi",
                "node_selector": {"cloud.google.com/gke-spot": "true"},
                "tolerations": [
                    {"key": "cloud.google.com/gke-spot", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
                ],
            },
        ],
    },
    "a long-lived cluster": {k: v for k, v in {**GPU, "cluster": "shared-gpu"}.items() if k != "worker_groups"},
    "incremental upgrade": {
        **GPU,
        "upgrade_strategy": "NewClusterWithIncrementalUpgrade",
        "incremental_upgrade": {"gateway_class": "istio"},
    },
}
PROFILES = {**EXAMPLES, **VARIANTS}


def _request(**changes) -> RayJobRequest:
    identity = JobIdentity(
        deployment="airflow", dag_id="churn", run_id="scheduled__2026-12-01T00:00:00+00:00", task_id="train.fit"
    )
    labels, annotations = identity.kube_marks(try_number=1)
    fields = {
        "name": identity.resource_name(1),
        "job_id": identity.base + "-1",
        "entrypoint": "python -m airflow_provider_rayops.jobs.train",
        "runtime_env": {"env_vars": {"RAYOPS_JOB_ARGS": json.dumps({"epochs": 3, "note": "it's: {not yaml}"})}},
        "metadata": identity.metadata(try_number=1),
        "labels": labels,
        "annotations": annotations,
        "entrypoint_num_cpus": 1,
        "entrypoint_num_gpus": 0.5,
        "entrypoint_resources": {"accelerator_type:H100": 0.001},
        "deadline_s": 3600,
    }
    return RayJobRequest(**{**fields, **changes})


def test_the_repository_ships_a_kuberay_gpu_example_in_both_places():
    assert set(EXAMPLES) >= {"dag_configs/defaults.yaml:kuberay-gpu", "helm/rayops/values.yaml:kuberay-gpu"}


@pytest.mark.parametrize("where", sorted(PROFILES))
def test_every_rayjob_the_backend_builds_is_valid_for_the_api_server_and_for_kuberay(where):
    manifest = ray_job(parse_profile(PROFILES[where]), _request())
    kuberay_crds.validate(manifest)
    assert _kuberay_validation(manifest) is None


@pytest.mark.parametrize("where", sorted(w for w in PROFILES if "long-lived" not in w))
def test_every_rayservice_the_backend_builds_is_valid_for_the_api_server(where):
    serve_config = {"http_options": {"host": "0.0.0.0", "port": 8000}, "applications": [{"name": "churn", "route_prefix": "/churn", "import_path": "airflow_provider_rayops.serving.app:build"}]}  # fmt: skip
    manifest = ray_service(parse_profile(PROFILES[where]), name="churn", serve_config=serve_config)
    kuberay_crds.validate(manifest)
    assert yaml.safe_load(manifest["spec"]["serveConfigV2"]) == serve_config


def test_the_gpu_profile_becomes_gpu_limits_tolerations_and_autoscaling_bounds():
    spec = ray_job(parse_profile(GPU), _request())["spec"]
    (group,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    (container,) = group["template"]["spec"]["containers"]
    assert container["resources"]["limits"][GPU_RESOURCE] == 1
    assert container["resources"]["requests"] == container["resources"]["limits"]
    assert (group["minReplicas"], group["maxReplicas"], group["replicas"]) == (0, 4, 0)
    assert spec["rayClusterSpec"]["enableInTreeAutoscaling"] is True
    assert group["template"]["spec"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert group["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "runAsNonRoot": True}
    assert spec["rayClusterSpec"]["authOptions"] == {"mode": "token", "secretName": "rayops-ray-token"}


def test_the_job_fields_reach_kuberay_as_its_submitter_reads_them():
    request = _request()
    spec = ray_job(parse_profile(GPU), request)["spec"]
    assert spec["jobId"] == request.job_id and spec["submissionMode"] == "K8sJobMode"
    assert yaml.safe_load(spec["runtimeEnvYAML"]) == request.runtime_env  # quotes and colons survive
    assert json.loads(spec["entrypointResources"]) == {"accelerator_type:H100": 0.001}
    assert (spec["entrypointNumCpus"], spec["entrypointNumGpus"]) == (1, 0.5)
    assert spec["metadata"]["rayops_dag_id"] == "churn"
    assert spec["activeDeadlineSeconds"] == 3600


def test_the_shorter_of_the_tasks_and_the_profiles_deadline_wins():
    profile = parse_profile({**GPU, "active_deadline_s": 600})
    assert ray_job(profile, _request(deadline_s=3600))["spec"]["activeDeadlineSeconds"] == 600
    assert ray_job(profile, _request(deadline_s=60))["spec"]["activeDeadlineSeconds"] == 60
    assert "activeDeadlineSeconds" not in ray_job(parse_profile(GPU), _request(deadline_s=None))["spec"]


def test_clean_up_uses_deletion_rules_or_the_legacy_fields_never_both():
    rules = ray_job(parse_profile(GPU), _request())["spec"]
    assert "shutdownAfterJobFinishes" not in rules
    by_condition = {(r["policy"], json.dumps(r["condition"], sort_keys=True)) for r in rules["deletionStrategy"]["deletionRules"]}
    assert ("DeleteCluster", '{"jobStatus": "SUCCEEDED", "ttlSeconds": 300}') in by_condition
    assert ("DeleteCluster", '{"jobDeploymentStatus": "Failed", "ttlSeconds": 3600}') in by_condition
    assert ("DeleteSelf", '{"jobStatus": "FAILED", "ttlSeconds": 86400}') in by_condition
    legacy = ray_job(parse_profile(VARIANTS["legacy clean-up (KubeRay < 1.6)"]), _request())["spec"]
    assert "deletionStrategy" not in legacy
    assert (legacy["shutdownAfterJobFinishes"], legacy["ttlSecondsAfterFinished"]) == (True, 120)


def test_resource_names_are_dns_labels_kuberay_accepts_stable_and_distinct():
    names = set()
    for dag_id, task_id in [
        ("churn", "train.fit"),
        ("9lives", "x"),
        ("A" * 300, "B" * 300),
        ("a_b.c", "d--e"),
        ("churn", "train.fit2"),
    ]:
        identity = JobIdentity(deployment="airflow", dag_id=dag_id, run_id="manual__1", task_id=task_id)
        for attempt in (1, 2, 12):
            name = identity.resource_name(attempt)
            assert len(name) <= RAYJOB_NAME_MAX and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name), name
            assert name == identity.resource_name(attempt)
            names.add(name)
    assert len(names) == 15


# -- the checks can fail: what a broken manifest gets ----------------------------------------------


def test_a_field_the_crd_does_not_declare_is_refused_not_dropped():
    manifest = ray_job(parse_profile(GPU), _request())
    manifest["spec"]["shutdownAfterJobFinish"] = True  # a typo the API server would prune
    with pytest.raises(kuberay_crds.ManifestInvalid, match=r"'shutdownAfterJobFinish' was unexpected"):
        kuberay_crds.validate(manifest)


def test_the_crds_cel_rules_are_evaluated():
    manifest = ray_job(parse_profile(GPU), _request())
    manifest["spec"]["deletionStrategy"]["onSuccess"] = {"policy": "DeleteCluster"}
    with pytest.raises(
        kuberay_crds.ManifestInvalid, match="legacy policies \\(onSuccess/onFailure\\) and deletionRules cannot be used together"
    ):
        kuberay_crds.validate(manifest)
    assert kuberay_crds.cel_rule_count("RayJob") == 9


def test_types_and_quantities_are_checked_as_the_api_server_would():
    manifest = ray_job(parse_profile(GPU), _request())
    container = manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    container["resources"]["limits"]["memory"] = "32 GB"
    manifest["spec"]["backoffLimit"] = 2**31
    with pytest.raises(kuberay_crds.ManifestInvalid) as invalid:
        kuberay_crds.validate(manifest)
    assert "'32 GB' does not match" in str(invalid.value)
    assert "spec.backoffLimit: 2147483648 is greater than the maximum of 2147483647" in str(invalid.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"worker_groups": [{"name": "gpu", "replicas": {"min": 3, "max": 1}}]}, "replicas.min (3) is above replicas.max (1)"),
        ({"worker_groups": [{"name": "a"}, {"name": "a"}]}, "worker group names must be unique; repeated: a"),
        ({"ray_version": "2.40.0"}, "auth: token needs Ray 2.52.0 or later"),
        ({"cluster": "shared"}, "cluster runs jobs on an existing RayCluster: worker_groups cannot be given with it"),
        ({"head": {"memory": "8 GB"}}, "String should match pattern"),
        ({"worker_groups": [{"name": "GPU_pool"}]}, "String should match pattern"),
        ({"cleanup": {"after_s": 600, "delete_job_after_s": 60}}, "delete_job_after_s must be at least after_s"),
        ({"upgrade_strategy": "NewClusterWithIncrementalUpgrade"}, "needs incremental_upgrade (gateway_class at least)"),
        (
            {
                "upgrade_strategy": "NewClusterWithIncrementalUpgrade",
                "incremental_upgrade": {"gateway_class": "istio", "step_percent": 50, "max_surge_percent": 20},
            },
            "step_percent (50) must not exceed max_surge_percent (20)",
        ),
        ({"worker_groups": [], "cluster": "shared", "backoff_limit": 2}, "KubeRay refuses backoff_limit: leave it 0"),
        (
            {
                "upgrade_strategy": "NewClusterWithIncrementalUpgrade",
                "incremental_upgrade": {"gateway_class": "istio"},
                "autoscaling": False,
            },
            "needs the Ray autoscaler",
        ),
    ],
)
def test_a_profile_kuberay_would_refuse_is_refused_when_it_is_loaded(change, message):
    with pytest.raises(pydantic.ValidationError, match=re.escape(message)):
        KubeRayProfile.model_validate({**GPU, **change})
