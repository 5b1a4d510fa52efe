"""rayops: an Airflow provider whose YAML-driven DAG factory runs the ML lifecycle on Ray."""
__version__ = "0.1.0"
