"""DAG factory: validated pipeline configs -> Airflow DAGs.

The public surface is `load_pipelines`, called from one small file in the dags folder.
"""

from airflow_provider_rayops.factory.loader import load_pipelines

__all__ = ["load_pipelines"]
