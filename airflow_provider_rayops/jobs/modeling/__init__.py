"""Models, features and the model artifact contract shared by train, tune, evaluate and Serve.

Transitional: the former jobs/modeling.py sits whole in features.py (a pure rename, so its
history follows); this re-exports it until the next commit splits it into one module a piece.
"""

from airflow_provider_rayops.jobs.modeling.features import *  # noqa: F403
from airflow_provider_rayops.jobs.modeling.features import _download_folder  # noqa: F401 (jobs/tune.py uses it)
