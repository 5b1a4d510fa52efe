"""The serving plane: what a deployed model version takes and answers.

- `payload`: request bodies checked against the model's column signature before any row
  reaches the model (every problem is an HTTP 4xx that names the column).

This package imports neither Airflow nor Ray at module level: its code runs in Serve replicas.
"""
