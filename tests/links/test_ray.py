"""The "Ray job" extra link."""

from __future__ import annotations

from airflow_provider_rayops import get_provider_info
from airflow_provider_rayops.links.ray import XCOM_KEY, RayJobLink, link_xcom_value, url_from_xcom
from airflow_provider_rayops.operators.ray_job import SubmitRayJobOperator


def test_the_link_is_declared_by_the_provider_and_carried_by_the_operator():
    assert "airflow_provider_rayops.links.ray.RayJobLink" in get_provider_info()["extra-links"]
    assert any(isinstance(link, RayJobLink) for link in SubmitRayJobOperator.operator_extra_links)
    assert RayJobLink().name == "Ray job"


def test_the_xcom_the_operator_pushes_names_the_dashboard_job_page():
    value = link_xcom_value("http://127.0.0.1:8265", "rayops-d--t--run-1a2b3c4d-1")
    assert XCOM_KEY == "ray_job"
    assert value["job_url"] == "http://127.0.0.1:8265/#/jobs/rayops-d--t--run-1a2b3c4d-1"
    assert url_from_xcom(value) == value["job_url"]


def test_no_job_yet_means_no_link():
    assert url_from_xcom(None) == ""
    assert url_from_xcom({"dashboard_url": "http://127.0.0.1:8265"}) == ""
