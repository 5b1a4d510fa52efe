"""The "MLflow model version" extra link."""

from __future__ import annotations

from airflow_provider_rayops import get_provider_info
from airflow_provider_rayops.links.mlflow import XCOM_KEY, MlflowModelVersionLink, link_xcom_value, url_from_xcom
from airflow_provider_rayops.operators.mlflow_model import (
    ApproveModelVersionOperator,
    PromoteMLflowModelOperator,
    RegisterMLflowModelOperator,
)


def test_the_link_is_declared_by_the_provider_and_carried_by_the_registry_operators():
    assert "airflow_provider_rayops.links.mlflow.MlflowModelVersionLink" in get_provider_info()["extra-links"]
    for operator in (RegisterMLflowModelOperator, ApproveModelVersionOperator, PromoteMLflowModelOperator):
        assert any(isinstance(link, MlflowModelVersionLink) for link in operator.operator_extra_links)
    assert MlflowModelVersionLink().name == "MLflow model version"


def test_the_xcom_names_the_version_page_of_the_tracking_server():
    value = link_xcom_value("http://mlflow.ml:5000/", "churn", 7)
    assert XCOM_KEY == "mlflow_model_version"
    assert value == {"tracking_uri": "http://mlflow.ml:5000/", "registered_model": "churn", "version": "7",
                     "url": "http://mlflow.ml:5000/#/models/churn/versions/7"}  # fmt: skip
    assert url_from_xcom(value) == value["url"]


def test_the_embedded_sqlite_store_has_no_ui_so_no_link():
    assert link_xcom_value("sqlite:////home/me/.rayops/mlflow/mlflow.db", "churn", 1)["url"] == ""
    assert url_from_xcom(link_xcom_value("sqlite:////home/me/.rayops/mlflow/mlflow.db", "churn", 1)) == ""


def test_no_version_yet_means_no_link():
    assert url_from_xcom(None) == ""
    assert url_from_xcom({"tracking_uri": "http://mlflow.ml:5000", "registered_model": "churn"}) == ""
