"""The "MLflow model version" extra link: opens the version a task registered or promoted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

from airflow_provider_rayops.registry.audit import model_version_ui_url

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

# XCom the registry operators push as soon as they know the version:
# {"tracking_uri", "registered_model", "version", "url"} (url "" for a store without a UI).
XCOM_KEY = "mlflow_model_version"


def link_xcom_value(tracking_uri: str, registered_model: str, version: str | int) -> dict[str, str]:
    return {
        "tracking_uri": tracking_uri,
        "registered_model": registered_model,
        "version": str(version),
        "url": model_version_ui_url(tracking_uri, registered_model, version),
    }


def url_from_xcom(value: Any) -> str:
    """The MLflow UI page of the version an XCom value names ('' for anything else)."""
    if (
        not isinstance(value, dict)
        or not value.get("tracking_uri")
        or not value.get("registered_model")
        or not value.get("version")
    ):
        return ""
    return model_version_ui_url(str(value["tracking_uri"]), str(value["registered_model"]), str(value["version"]))


class MlflowModelVersionLink(BaseOperatorLink):
    """`<tracking server>/#/models/<name>/versions/<version>`; empty for the embedded sqlite store."""

    name = "MLflow model version"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return url_from_xcom(XCom.get_value(ti_key=ti_key, key=XCOM_KEY))
