"""The serving plane: what a deployed model version takes and answers.

- `app`: the router and version deployments Serve runs; `config`: the Serve config that names
  them (built in Airflow, no Ray);
- `payload`: request bodies checked against the model's column signature before any row
  reaches the model (every problem is an HTTP 4xx that names the column).

`config` and `payload` import neither Airflow nor Ray; `app` runs in Serve replicas.
"""
