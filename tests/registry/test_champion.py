"""The champion lookups the evaluate job makes (registry/champion.py), and the registry's imports.

Against real MLflow stores these run inside the evaluate job: tests/jobs/test_evaluate.py. Here:
what needs no server.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

from airflow_provider_rayops.registry.champion import ModelIdentity, model_identity

ROOT = Path(__file__).resolve().parents[2]


def test_the_registry_package_imports_no_airflow():
    # The evaluate job (a Ray job, no Airflow installed) imports registry.champion.
    code = (
        "import sys, pkgutil, importlib\n"
        "import airflow_provider_rayops.registry as registry\n"
        "for m in pkgutil.iter_modules(registry.__path__):\n"
        "    importlib.import_module(f'airflow_provider_rayops.registry.{m.name}')\n"
        "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def _version(name="churn", number="3", *, model_id=None, source="s3://bucket/model"):
    return SimpleNamespace(name=name, version=number, model_id=model_id, source=source)


def test_a_candidate_is_the_champion_by_its_logged_model_or_its_registered_version():
    logged = ModelIdentity(model_id="m-abc")
    assert logged.same_as(_version(model_id="m-abc"))
    assert logged.same_as(_version(source="models:/m-abc"))  # REST drops model_id; the source keeps it
    assert not logged.same_as(_version(model_id="m-other"))
    registered = ModelIdentity(registered_model="churn", version="3")
    assert registered.same_as(_version()) and not registered.same_as(_version(number="4"))
    assert not ModelIdentity().same_as(_version())


def test_a_uri_outside_the_registry_is_never_the_champion():
    client = SimpleNamespace()  # not called: these URIs are told apart without MLflow
    assert model_identity(client, "runs:/abc/model") == ModelIdentity()
    assert model_identity(client, "file:///tmp/checkpoint") == ModelIdentity()
    assert model_identity(client, "models:/m-abc") == ModelIdentity(model_id="m-abc")
