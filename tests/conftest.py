"""Test session setup: every service the tests use is real and bound to 127.0.0.1.

Airflow reads its configuration when first imported, so the environment is set here,
before any test module imports it. Each session keeps its state (Airflow home and database,
RAYOPS_HOME with the Ray head, the parse cache and the embedded MLflow store) in a temporary
folder of its own, removed when it ends: nothing carries over from an earlier session, and
two sessions side by side share nothing.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Short: Ray's socket paths under it must stay below the Unix limit (backends/embedded_head.py).
STATE = pathlib.Path(tempfile.mkdtemp(prefix="rt-"))

os.environ["AIRFLOW_HOME"] = str(STATE / "airflow")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
os.environ["RAYOPS_HOME"] = str(STATE / "rayops")
os.environ.pop("RAYOPS_CACHE_DIR", None)  # the parse cache lives under RAYOPS_HOME too
os.environ.setdefault("RAYOPS_CONFIG_DIR", str(ROOT / "dag_configs"))

pytest_plugins = [
    "tests.fixtures.airflow_db",
    "tests.fixtures.ray_head",
    "tests.fixtures.bare_cluster",
    "tests.fixtures.s3",
    "tests.fixtures.airflow_stack",
    "tests.fixtures.mlflow",
    "tests.fixtures.kube_api",
]


def pytest_sessionfinish(session, exitstatus) -> None:
    # Fixtures (the Ray head, servers) have stopped by now.
    shutil.rmtree(STATE, ignore_errors=True)
