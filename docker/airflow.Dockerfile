# syntax=docker/dockerfile:1
# The Airflow image for rayops: scheduler, dag-processor, api-server, triggerer and workers.
# Build from the repository root (docker/airflow.Dockerfile.dockerignore keeps .venv, .git and
# local secrets out of the context):
#   docker build -f docker/airflow.Dockerfile -t <registry>/rayops-airflow:0.1.0 .
# Airflow never computes: this image has the provider's core, the kuberay backend (cncf-kubernetes
# provider) and the drift check (monitor extra), but no Ray and no torch. Ray workers use
# docker/ray.Dockerfile. helm/values/airflow.yaml runs it with the official Airflow chart.

# The official image at exactly the Airflow that pyproject.toml's `test` extra pins and CI runs
# (tests/docker/test_dockerfiles.py keeps them equal), on the Python the project is tested with.
FROM apache/airflow:3.3.2-python3.11

LABEL org.opencontainers.image.title="rayops-airflow" \
      org.opencontainers.image.description="Apache Airflow with airflow-provider-rayops (kubernetes, monitor extras) and its DAG file" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/apache/airflow:3.3.2-python3.11"

# The official image installs packages as its airflow user (uid 50000, group 0), never as root.
USER 50000:0

# Only what the package build reads: pyproject.toml, README.md (its long description) and the package.
COPY --chown=50000:0 pyproject.toml README.md /opt/rayops/
COPY --chown=50000:0 airflow_provider_rayops /opt/rayops/airflow_provider_rayops

# AIRFLOW_VERSION is set by the base image: as a constraint it keeps pip from upgrading or
# downgrading the Airflow the image ships (the provider accepts any 3.x from 3.1).
RUN printf 'apache-airflow==%s\n' "${AIRFLOW_VERSION}" > /tmp/airflow-constraint.txt \
 && pip install --no-cache-dir --constraint /tmp/airflow-constraint.txt "/opt/rayops[kubernetes,monitor]" \
 && rm -rf /tmp/airflow-constraint.txt /opt/rayops/build \
 && python -c "import airflow, airflow_provider_rayops; print('airflow', airflow.__version__, 'rayops', airflow_provider_rayops.__version__)"

# The DAG file and the example pipelines. In a cluster the chart's platform defaults are mounted over
# /opt/airflow/dag_configs/defaults.yaml (helm/values/airflow.yaml).
COPY --chown=50000:0 dags /opt/airflow/dags
COPY --chown=50000:0 dag_configs /opt/airflow/dag_configs
ENV RAYOPS_CONFIG_DIR=/opt/airflow/dag_configs

# The airflow user (uid 50000), numeric so that Kubernetes' runAsNonRoot can check it.
USER 50000:0
