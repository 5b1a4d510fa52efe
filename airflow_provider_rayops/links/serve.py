"""The "Serve endpoint" extra link: opens the health route of the endpoint a deploy task served."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink

from airflow_provider_rayops.serving.config import HEALTH_PATH

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

# XCom the deploy operator pushes as soon as it knows where the endpoint is: its URL.
XCOM_KEY = "serve_endpoint"


class ServeEndpointLink(BaseOperatorLink):
    """`<endpoint>/-/healthz`: the weights and each version's state, as the router sees them."""

    name = "Serve endpoint"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        url = XCom.get_value(ti_key=ti_key, key=XCOM_KEY)
        return f"{url}{HEALTH_PATH}" if isinstance(url, str) and url.startswith("http") else ""
