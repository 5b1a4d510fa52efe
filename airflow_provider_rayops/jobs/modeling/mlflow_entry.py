"""What MLflow runs to build a logged rayops model ("models from code": no pickled Python object
is loaded). It travels inside each logged model; the package's modules it imports travel in the
model's code/ folder (see mlflow_model.py)."""

from mlflow.models import set_model

from airflow_provider_rayops.jobs.modeling.mlflow_model import RayopsModel

set_model(RayopsModel())
