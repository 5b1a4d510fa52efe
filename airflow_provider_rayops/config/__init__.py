"""Config plane: pipeline YAML loading, its schema, defaults and compute profiles. Imports no Airflow and no Ray."""
