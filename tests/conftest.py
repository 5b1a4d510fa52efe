"""Test session setup: every service the tests use is real and bound to 127.0.0.1.

Airflow reads its configuration when first imported, so the environment is set here,
before any test module imports it. State lives under .rayops-test/ in the checkout.
"""

from __future__ import annotations

import os
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
STATE = ROOT / ".rayops-test"

os.environ.setdefault("AIRFLOW_HOME", str(STATE / "airflow"))
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(ROOT / "dags"))
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "True")
os.environ.setdefault("RAYOPS_HOME", str(STATE / "rayops"))
os.environ.setdefault("RAYOPS_CONFIG_DIR", str(ROOT / "dag_configs"))

pytest_plugins = [
    "tests.fixtures.airflow_db",
    "tests.fixtures.ray_head",
    "tests.fixtures.s3",
    "tests.fixtures.airflow_stack",
    "tests.fixtures.mlflow",
]
