"""Before a job is submitted, the cluster is checked and sent what it lacks (backends/cluster_code.py).

The probe runs for real on two clusters: the session's head (this very Python, rayops installed)
and the bare cluster (tests/fixtures/bare_cluster.py: Ray and the libraries, no rayops). The
version checks are also fed reports by hand, for what no cluster here can be (Python 3.10, Ray 2.59).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time

import pytest

from airflow_provider_rayops import __version__
from airflow_provider_rayops.backends import cluster_code, code_package
from airflow_provider_rayops.backends.cluster_code import ClusterNotReady, ClusterReport, JobCode
from airflow_provider_rayops.config.compute import LocalProfile, RayClusterProfile
from airflow_provider_rayops.hooks.ray_jobs_api import JobStatus

GOOD = ClusterReport(
    python="3.11.9",
    executable="/opt/ray/bin/python",
    distributions={
        "ray": "2.60.0",
        "torch": "2.6.0",
        "pyarrow": "21.0.0",
        "numpy": "2.1.0",
        "scipy": "1.14.1",  # the drift job's tests
        "mlflow": "3.2.0",
        "pydantic": "2.9.0",
    },
    modules={},
    rayops=None,
    ray_version="2.60.0",
)


def _problems(report: ClusterReport, mode: str = "auto", **code) -> list[str]:
    return cluster_code.cluster_problems(report, JobCode(profile_name="dev", **code), mode)[0]


def test_a_cluster_with_the_libraries_but_no_rayops_is_sent_the_job_code_under_auto_and_ship():
    assert cluster_code.cluster_problems(GOOD, JobCode(), "auto")[:2] == ([], True)
    assert cluster_code.cluster_problems(GOOD, JobCode(), "ship")[:2] == ([], True)
    (problem,) = _problems(GOOD, "image")
    assert problem.startswith(f"airflow-provider-rayops is not installed on the cluster (this Airflow runs {__version__})")
    assert "set compute_profiles.dev.code: auto (or ship)" in problem


def test_an_old_python_or_ray_fails_in_every_mode_saying_what_is_needed():
    old = dataclasses.replace(GOOD, python="3.10.14", ray_version="2.59.0", distributions={**GOOD.distributions, "ray": "2.59.0"})
    for mode in ("auto", "ship", "image"):
        problems = _problems(old, mode)
        assert problems[0].startswith("Python 3.10.14 on the cluster (/opt/ray/bin/python); rayops jobs need Python <3.13,>=3.11")
        assert any(p.startswith("ray 2.59.0 on the cluster; the jobs need ray<3,>=2.60") for p in problems), problems


def test_a_missing_library_is_named_unless_the_pipeline_installs_it():
    no_torch = dataclasses.replace(GOOD, distributions={k: v for k, v in GOOD.distributions.items() if k != "torch"})
    (problem,) = _problems(no_torch)
    assert problem.startswith("torch is not installed on the cluster; the jobs need torch>=2.4")
    assert problem.endswith("install 'torch>=2.4' in the cluster's image, or add it to the pipeline's runtime_env.pip")
    assert _problems(no_torch, pip=("torch==2.6.0",)) == []
    # MLflow's skinny build provides the same import.
    skinny = dataclasses.replace(GOOD, distributions={**GOOD.distributions, "mlflow": None, "mlflow-skinny": "3.2.0"})
    assert _problems(skinny) == []


def test_a_plain_job_needs_nothing_of_rayops():
    assert cluster_code.cluster_problems(dataclasses.replace(GOOD, python="3.8.0"), JobCode(rayops=False), "auto")[:2] == (
        [],
        False,
    )


def test_the_job_code_on_a_cluster_is_compared_by_version_and_digest():
    same = dataclasses.replace(GOOD, rayops={"version": __version__, "digest": cluster_code.package_digest(), "path": "/x"})
    assert cluster_code.cluster_problems(same, JobCode(), "auto")[:2] == ([], False)  # the image has it: not shipped
    assert cluster_code.cluster_problems(same, JobCode(), "image")[:2] == ([], False)
    edited = dataclasses.replace(same, rayops={**same.rayops, "digest": "0" * 64})
    problems, ship, warnings = cluster_code.cluster_problems(edited, JobCode(profile_name="dev"), "image")
    assert (problems, ship) == ([], False)
    assert "has other files than this Airflow's (a development install?)" in warnings[0]
    assert cluster_code.cluster_problems(edited, JobCode(), "auto")[1] is True  # auto sends exactly this code


def test_the_session_head_has_this_very_job_code_so_auto_sends_only_the_pipelines_module(ray_head, monkeypatch, tmp_path):
    monkeypatch.setenv("RAYOPS_HOME", str(tmp_path))
    loops = tmp_path / "myloops"
    loops.mkdir()
    (loops / "__init__.py").write_text("")
    client = ray_head.client()
    prepared = cluster_code.prepare_job_code(
        client, RayClusterProfile(backend="ray", code="auto"), JobCode(modules=(str(loops),))
    )
    assert [p.label for p in prepared.shipped] == ["module myloops of the pipeline"]
    assert any("the cluster's image has airflow-provider-rayops" in note for note in prepared.notes)
    # The embedded head is this Python by construction: nothing is probed, the module is still sent.
    local = cluster_code.prepare_job_code(client, LocalProfile(backend="local"), JobCode(modules=(str(loops),)))
    assert local.py_modules == prepared.py_modules and local.notes == ()


def test_the_bare_cluster_is_probed_once_per_session_and_refused_under_image(bare_cluster, tmp_path):
    client = bare_cluster.client()
    report = cluster_code.probe_cluster(client, cache_dir=tmp_path)
    assert report.rayops is None
    assert report.executable == str(bare_cluster.python)
    assert report.ray_version == "2.60.0" and report.installed("torch")
    jobs_before = len(client.list_jobs())
    assert cluster_code.probe_cluster(client, cache_dir=tmp_path) == report  # from the cache: no second job
    assert len(client.list_jobs()) == jobs_before
    with pytest.raises(ClusterNotReady) as refused:
        cluster_code.prepare_job_code(
            client, RayClusterProfile(backend="ray", code="image"), JobCode(profile_name="dev"), cache_dir=tmp_path
        )
    assert str(refused.value).startswith(
        f"the Ray cluster at {bare_cluster.endpoint.dashboard_url} cannot run this job (compute profile 'dev', code: image):\n"
        "  - airflow-provider-rayops is not installed on the cluster"
    )


def test_job_code_of_another_version_on_the_cluster_is_refused_under_image_and_replaced_under_auto(bare_cluster, tmp_path):
    """The version marker is the package's __version__: a cluster holding 0.0.1 is simulated by
    sending the probe a package of that name whose __init__.py says so."""
    fake = tmp_path / "fake" / "airflow_provider_rayops"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('__version__ = "0.0.1"\n')
    client = bare_cluster.client()
    package = code_package.pack_module(fake, label="fake rayops")
    code_package.upload(client, package)
    found = cluster_code.run_probe(client, cluster_code.probe_request(), runtime_env={"py_modules": [package.uri]})
    report = ClusterReport.from_json(found, ray_version="2.60.0")
    assert report.rayops is not None and report.rayops["version"] == "0.0.1"
    (problem,) = _problems(report, "image")
    assert problem.startswith("airflow-provider-rayops 0.0.1 is installed on the cluster (")
    assert f"but this Airflow runs {__version__}: the job code must be the same version" in problem
    assert cluster_code.cluster_problems(report, JobCode(), "auto")[:2] == ([], True)


def test_a_job_run_by_other_job_code_than_the_airflow_that_sent_it_stops_with_one_line(ray_head):
    """The job-side check: RAYOPS_PROVIDER_VERSION says which version submitted the job."""
    client = ray_head.client()
    sid = "version-" + str(time.time_ns())
    client.submit(
        submission_id=sid,
        entrypoint=f"{sys.executable} -c 'from airflow_provider_rayops.jobs import run_job; run_job(lambda args: {{}})'",
        runtime_env={"env_vars": {"RAYOPS_PROVIDER_VERSION": "9.9.9"}},
        entrypoint_num_cpus=0,
    )
    deadline = time.monotonic() + 120
    while not (info := client.get_job(sid)).status.is_terminal():
        assert time.monotonic() < deadline, info
        time.sleep(0.3)
    assert info.status is JobStatus.FAILED
    logs = client.get_logs(sid)
    assert f"rayops job input error: this job runs airflow-provider-rayops {__version__} job code" in logs
    assert "but was submitted by Airflow with 9.9.9" in logs
    assert "Traceback" not in logs


def test_the_probe_runs_on_the_standard_library_alone(tmp_path):
    """It must work where rayops is missing: run from a folder with nothing of ours, in isolated mode."""
    script = (cluster_code.package_folder() / "backends" / "cluster_probe.py").read_text()
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", script, '{"distributions": ["ray"], "modules": ["json", "no_such_module"]}'],
        capture_output=True, text=True, cwd=tmp_path, check=True, timeout=60,
    ).stdout  # fmt: skip
    assert out.startswith("::rayops-probe::{")
    assert '"modules": {"json": true, "no_such_module": false}' in out
    assert '"rayops": null' in out  # -S: no site-packages, so no rayops either
