"""One interface, a backend per compute profile."""

from __future__ import annotations

import pydantic
import pytest

from airflow_provider_rayops.backends import get_backend
from airflow_provider_rayops.backends.embedded_head import default_state_dir
from airflow_provider_rayops.backends.kuberay import KubeRayBackend
from airflow_provider_rayops.backends.local import LocalBackend
from airflow_provider_rayops.backends.ray_cluster import RayClusterBackend
from airflow_provider_rayops.hooks.ray_jobs_api import BackendNotAvailable

KUBERAY = {"backend": "kuberay", "image": "ghcr.io/acme/rayops:1", "namespace": "ml"}


def test_no_profile_means_the_embedded_local_head_under_rayops_home():
    backend = get_backend(None)
    assert isinstance(backend, LocalBackend)
    assert backend.state_dir == default_state_dir().absolute()
    assert backend.profile_dict() == {"backend": "local", "state_dir": str(default_state_dir().absolute())}


def test_a_ray_profile_names_its_connection():
    backend = get_backend({"backend": "ray", "conn_id": "dev_cluster"})
    assert isinstance(backend, RayClusterBackend)
    assert backend.profile_dict() == {"backend": "ray", "conn_id": "dev_cluster"}


def test_a_kuberay_profile_has_no_dashboard_before_its_rayjob_exists():
    backend = get_backend(KUBERAY)
    assert isinstance(backend, KubeRayBackend)
    assert backend.profile_dict() == KUBERAY
    with pytest.raises(BackendNotAvailable, match="each job is a RayJob with a cluster of its own"):
        backend.endpoint()


def test_a_malformed_profile_is_a_validation_error():
    with pytest.raises(pydantic.ValidationError, match=r"local\.num_cpu\s+Extra inputs are not permitted"):
        get_backend({"backend": "local", "num_cpu": 2})
