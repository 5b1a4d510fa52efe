# syntax=docker/dockerfile:1
# The Ray image for rayops' KubeRay clusters: head and GPU workers run rayops' jobs (ingest, train,
# tune, evaluate, drift, the Serve app) with the provider and its `jobs` extra installed, so a profile
# can use `code: image` and nothing but the pipeline's own code is shipped with each job.
# Build from the repository root (docker/ray.Dockerfile.dockerignore keeps the context small and clean):
#   docker build -f docker/ray.Dockerfile -t <registry>/rayops-ray:0.1.0-cu128 .
# CPU-only variant (CPU workers, a head without GPUs): both arguments change together:
#   docker build -f docker/ray.Dockerfile -t <registry>/rayops-ray:0.1.0-cpu \
#     --build-arg RAY_VARIANT=cpu --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu .

# Ray exactly as pyproject.toml's `test` extra pins it (tests/docker/test_dockerfiles.py keeps them
# equal): the cluster runs the Ray rayops is tested with, on the same Python (py311).
ARG RAY_VERSION=2.60.0
# cu128 (CUDA 12.8), an exact CUDA tag rather than Ray's floating `-gpu` alias: the CUDA line both
# Ray's images and PyTorch's wheels are built for at these versions, whose kernels cover the GPUs
# rayops is measured on (Hopper: H100/H200) and Blackwell. torch comes from PyTorch's index for the
# same CUDA, so the image holds one CUDA, not two. GPU nodes need an NVIDIA driver for CUDA 12.8
# (570 or newer).
ARG RAY_VARIANT=cu128
FROM rayproject/ray:${RAY_VERSION}-py311-${RAY_VARIANT}

ARG RAY_VERSION
ARG RAY_VARIANT
# torch as pyproject.toml's `test` extra pins it, built for the CUDA above.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

LABEL org.opencontainers.image.title="rayops-ray" \
      org.opencontainers.image.description="Ray with airflow-provider-rayops and its jobs extra (CUDA torch) for rayops' KubeRay clusters" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="docker.io/rayproject/ray:${RAY_VERSION}-py311-${RAY_VARIANT}"

# The image's ray user (uid 1000, group users = 100) owns its Python: install as that user, never root.
USER 1000:100

# Only what the package build reads: pyproject.toml, README.md (its long description) and the package.
COPY --chown=1000:100 pyproject.toml README.md /opt/rayops/
COPY --chown=1000:100 airflow_provider_rayops /opt/rayops/airflow_provider_rayops

# 1. The base image must hold RAY_VERSION (a wrong tag fails here, not in a job).
# 2. torch from PyTorch's index for this CUDA (PyPI's default build may target another CUDA).
# 3. The `jobs` extra and the package's own requirements, read from pyproject.toml, without Airflow:
#    code inside Ray never imports it (the package is installed --no-deps for that reason). The
#    constraints keep the image's Ray and the torch just installed, so pip changes neither.
RUN python -c "import ray, sys; sys.exit(0 if ray.__version__ == '${RAY_VERSION}' else 'base image has Ray ' + ray.__version__ + ', expected ${RAY_VERSION}')" \
 && pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
 && printf 'ray==%s\ntorch==%s\n' "${RAY_VERSION}" "${TORCH_VERSION}" > /tmp/rayops-constraints.txt \
 && python -c "import tomllib; p = tomllib.load(open('/opt/rayops/pyproject.toml', 'rb'))['project']; print('\n'.join([r for r in p['dependencies'] if not r.startswith('apache-airflow')] + p['optional-dependencies']['jobs']))" > /tmp/rayops-jobs.txt \
 && pip install --no-cache-dir --constraint /tmp/rayops-constraints.txt --requirement /tmp/rayops-jobs.txt \
 && pip install --no-cache-dir --no-deps /opt/rayops \
 && rm -rf /tmp/rayops-constraints.txt /tmp/rayops-jobs.txt /opt/rayops/build \
 && python -c "import sys, ray, torch, airflow_provider_rayops.jobs; assert 'airflow' not in sys.modules; print('ray', ray.__version__, 'torch', torch.__version__, 'rayops', airflow_provider_rayops.__version__)"

# The ray user (uid 1000), numeric so that Kubernetes' runAsNonRoot can check it.
USER 1000:100
