"""rayops: an Airflow provider whose YAML-driven DAG factory runs the ML lifecycle on Ray."""

from __future__ import annotations

__version__ = "0.1.0"


def get_provider_info() -> dict:
    """Provider metadata, read by Airflow through the `apache_airflow_provider` entry point.

    `package-name` must equal the installed distribution's name, or `airflow providers list`
    breaks for every provider (Airflow 3.3's ProvidersManager looks the distribution up by it).
    """
    return {
        "package-name": "airflow-provider-rayops",
        "name": "rayops",
        "description": "YAML-driven DAG factory that runs the ML lifecycle on Ray: ingest, train, tune, "
        "register, serve with canary, monitor drift and retrain.",
        "versions": [__version__],
        # Every "integration-name" below is one of these (Airflow's providers pages group by them).
        "integrations": [
            {
                "integration-name": "Ray",
                "external-doc-url": "https://docs.ray.io/en/latest/cluster/running-applications/job-submission/index.html",
                "tags": ["software"],
            },
            {
                "integration-name": "MLflow",
                "external-doc-url": "https://mlflow.org/docs/latest/ml/model-registry/",
                "tags": ["software"],
            },
            {
                "integration-name": "Drift monitoring",
                "external-doc-url": "https://docs.evidentlyai.com/metrics/explainer_drift",
                "tags": ["software"],
            },
            {
                "integration-name": "S3 storage",
                "external-doc-url": "https://arrow.apache.org/docs/python/generated/pyarrow.fs.S3FileSystem.html",
                "tags": ["software"],
            },
        ],
        "connection-types": [
            {"connection-type": "rayops_ray", "hook-class-name": "airflow_provider_rayops.hooks.ray.RayHook"},
            {"connection-type": "rayops_s3", "hook-class-name": "airflow_provider_rayops.hooks.s3.S3StorageHook"},
            {"connection-type": "rayops_mlflow", "hook-class-name": "airflow_provider_rayops.hooks.mlflow.MlflowHook"},
        ],
        "extra-links": [
            "airflow_provider_rayops.links.ray.RayJobLink",
            "airflow_provider_rayops.links.mlflow.MlflowModelVersionLink",
            "airflow_provider_rayops.links.serve.ServeEndpointLink",
            "airflow_provider_rayops.links.drift.DriftReportLink",
        ],
        "triggers": [
            {"integration-name": "Ray", "python-modules": ["airflow_provider_rayops.triggers.ray_job"]},
            {"integration-name": "Ray", "python-modules": ["airflow_provider_rayops.triggers.canary"]},
        ],
        "hooks": [
            {"integration-name": "Ray", "python-modules": ["airflow_provider_rayops.hooks.ray"]},
            {"integration-name": "S3 storage", "python-modules": ["airflow_provider_rayops.hooks.s3"]},
            {"integration-name": "MLflow", "python-modules": ["airflow_provider_rayops.hooks.mlflow"]},
        ],
        "config": {
            "rayops": {
                "description": "rayops: the Airflow provider that runs the ML lifecycle on Ray.",
                "options": {
                    "deployment_id": {
                        "description": "This Airflow deployment's name in the Ray jobs it submits (job ids and "
                        "metadata). Give each deployment its own when several share one Ray cluster: a task "
                        "only re-attaches to a job its own deployment submitted.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "ml-prod",
                        "default": "airflow",
                    },
                },
            },
        },
        "operators": [
            {"integration-name": "Ray", "python-modules": ["airflow_provider_rayops.operators.ray_job"]},
            {"integration-name": "MLflow", "python-modules": ["airflow_provider_rayops.operators.mlflow_model"]},
            {"integration-name": "Ray", "python-modules": ["airflow_provider_rayops.operators.serve"]},
        ],
        "sensors": [
            {"integration-name": "Drift monitoring", "python-modules": ["airflow_provider_rayops.sensors.drift"]},
        ],
    }
