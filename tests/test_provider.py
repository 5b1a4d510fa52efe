"""The package is a real Airflow provider: Airflow's own CLI sees it and its pieces."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

AIRFLOW = str(Path(sys.executable).parent / "airflow")


def airflow(*args: str, tmp_path: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["AIRFLOW_HOME"] = str(tmp_path)
    proc = subprocess.run([AIRFLOW, *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_airflow_providers_list_shows_rayops(tmp_path):
    rows = [line for line in airflow("providers", "list", tmp_path=tmp_path).splitlines() if "airflow-provider-rayops" in line]
    assert len(rows) == 1 and "| 0.1.0" in rows[0]


def test_connection_types_are_prefixed_and_registered(tmp_path):
    out = airflow("providers", "hooks", tmp_path=tmp_path)
    rows = {line.split("|")[0].strip(): line for line in out.splitlines() if "airflow-provider-rayops" in line}
    assert sorted(rows) == ["rayops_mlflow", "rayops_ray", "rayops_s3"]
    assert "airflow_provider_rayops.hooks.ray.RayHook" in rows["rayops_ray"]


def test_extra_links_and_triggers_are_declared(tmp_path):
    assert "airflow_provider_rayops.links.ray.RayJobLink" in airflow("providers", "links", tmp_path=tmp_path)
    assert "airflow_provider_rayops.triggers.ray_job" in airflow("providers", "triggers", tmp_path=tmp_path)


def test_provider_info_fits_airflows_schema_and_names_its_integrations():
    """Airflow validates provider info only in its own CI; a mistake here breaks `providers list` for everyone."""
    import json

    import airflow
    import jsonschema

    from airflow_provider_rayops import get_provider_info

    info = get_provider_info()
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(info, schema)
    declared = {item["integration-name"] for item in info["integrations"]}
    used = {item["integration-name"] for key in ("operators", "sensors", "hooks", "triggers") for item in info[key]}
    assert used <= declared, f"integration names used but not declared: {used - declared}"
    assert declared == {"Ray", "MLflow", "S3 storage", "Drift monitoring"}
