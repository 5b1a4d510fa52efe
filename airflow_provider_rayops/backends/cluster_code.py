"""Before a job is submitted: can the cluster import what it runs? Check it, ship what is missing.

A rayops job imports this package's job code, its libraries (Ray, torch, pyarrow, MLflow...)
and, for a custom training loop, the pipeline's own module from the project folder. A cluster
someone else runs may lack any of them, or have other versions. `prepare_job_code` decides, by
the compute profile's `code:` key, what each job gets:

    ship   rayops' job code and the pipeline's modules are uploaded as `py_modules`
    image  nothing is uploaded; the image must have this very rayops version and the modules
    auto   rayops' job code is uploaded when the image lacks this version; the pipeline's
           modules always are (the project folder is what the team committed)

Everything is content-addressed: an unchanged package is sent once per cluster, not per job.
On a `ray` profile a probe job (`cluster_probe.py`) first reports the cluster's Python, its
libraries and the rayops it has; the report is cached per cluster session for PROBE_TTL_S.
Python, Ray and the libraries are checked in every mode: a cluster that cannot run the jobs
fails the task at once with `ClusterNotReady`, saying what is installed, what is needed and
which key fixes it. The embedded head (`local`) runs this very Python: only the pipeline's
modules are shipped there, and nothing is probed.

No Airflow and no Ray here.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import json
import shlex
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow_provider_rayops import __version__
from airflow_provider_rayops.backends import cluster_probe, code_package
from airflow_provider_rayops.config.cache import write_atomically
from airflow_provider_rayops.config.compute import LocalProfile, RayClusterProfile
from airflow_provider_rayops.config.home import rayops_home
from airflow_provider_rayops.hooks.ray_jobs_api import BackendNotAvailable, JobStatus, RayJobsClient, RayopsComputeError

DISTRIBUTION = "airflow-provider-rayops"
PROBE_TTL_S = 600.0
PROBE_TIMEOUT_S = 120.0
# Another distribution that provides the same import: MLflow's skinny build serves the jobs too.
_ALSO_PROVIDED_BY = {"mlflow": ("mlflow-skinny",)}
# Core dependencies the job code imports (the rest of the core, Airflow above all, stays off clusters).
_CORE_FOR_JOBS = ("pydantic",)
README_SECTION = "README: Running on an existing Ray cluster"
# The package alone: its core dependencies (Airflow above all) belong on the Airflow side, not on a cluster.
_INSTALL = f"`pip install --no-deps '{DISTRIBUTION}=={__version__}'`"


class ClusterNotReady(RayopsComputeError):
    """The cluster cannot run the job as configured; retrying will not help, the message says what will."""


@dataclasses.dataclass(frozen=True)
class JobCode:
    """What a job needs from the cluster besides Ray itself.

    :param rayops: the job runs this package's job code (every job a pipeline submits).
    :param modules: local paths (a package folder or one .py file) of the pipeline's own code.
    :param excludes: gitignore patterns of files in `modules` not to ship.
    :param pip: requirements the pipeline's runtime_env installs (they need not be on the image).
    :param profile_name: the compute profile's name, for messages that say which key to change.
    :param project_dir: the project folder the modules lie in (its .gitignore applies too).
    """

    rayops: bool = True
    modules: tuple[str, ...] = ()
    excludes: tuple[str, ...] = ()
    pip: tuple[str, ...] = ()
    profile_name: str | None = None
    project_dir: str | None = None


@dataclasses.dataclass(frozen=True)
class PreparedCode:
    """What `prepare_job_code` decided: the py_modules to add, and what it shipped (for the log)."""

    py_modules: tuple[str, ...] = ()
    shipped: tuple[code_package.CodePackage, ...] = ()
    uploaded: tuple[str, ...] = ()  # URIs sent this time (the others were on the cluster already)
    notes: tuple[str, ...] = ()

    def describe(self) -> list[str]:
        lines = [
            f"shipping {p.describe()} as {p.uri} ({'uploaded' if p.uri in self.uploaded else 'already on the cluster'})"
            for p in self.shipped
        ]
        return lines + list(self.notes)


# -- this side: what the jobs need -------------------------------------------------------------------


@functools.cache
def package_folder() -> Path:
    return Path(cluster_probe.__file__).resolve().parent.parent


@functools.cache
def package_digest() -> str:
    return cluster_probe.package_digest(str(package_folder()))


@functools.cache
def rayops_package() -> code_package.CodePackage:
    """This package's job code as a py_modules zip (its Python files; built once per process)."""
    folder = package_folder()
    return code_package.pack_module(folder, label=f"{DISTRIBUTION} {__version__} job code")


@functools.cache
def job_requirements() -> tuple[Any, ...]:
    """The requirements the job code has on a cluster: the `jobs` extra and the core libraries it
    imports, from this installation's metadata (so they never drift from pyproject.toml)."""
    from packaging.requirements import Requirement

    needed = []
    for line in importlib.metadata.requires(DISTRIBUTION) or []:
        req = Requirement(line)
        in_jobs = req.marker is not None and req.marker.evaluate({"extra": "jobs"}) and not req.marker.evaluate({"extra": ""})
        if in_jobs or (req.marker is None and req.name in _CORE_FOR_JOBS):
            needed.append(req)
    return tuple(needed)


@functools.cache
def python_requirement() -> str:
    return str(importlib.metadata.metadata(DISTRIBUTION).json.get("requires_python") or "")


# -- the cluster's side: the probe --------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ClusterReport:
    """What the probe found on the cluster (see cluster_probe.py)."""

    python: str
    executable: str
    distributions: Mapping[str, str | None]
    modules: Mapping[str, bool]
    rayops: Mapping[str, str | None] | None
    ray_version: str = ""

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, ray_version: str = "") -> ClusterReport:
        return cls(
            python=str(data["python"]),
            executable=str(data.get("executable") or ""),
            distributions=dict(data.get("distributions") or {}),
            modules=dict(data.get("modules") or {}),
            rayops=data.get("rayops"),
            ray_version=ray_version,
        )

    def installed(self, name: str) -> str | None:
        for candidate in (name, *_ALSO_PROVIDED_BY.get(name, ())):
            version = self.distributions.get(candidate)
            if version:
                return version
        return None


def probe_request(modules: Sequence[str] = ()) -> dict[str, list[str]]:
    names = sorted({r.name for r in job_requirements()} | {alt for alts in _ALSO_PROVIDED_BY.values() for alt in alts})
    return {"distributions": names, "modules": sorted(set(modules))}


def run_probe(client: RayJobsClient, request: Mapping[str, Any], *, runtime_env: Mapping[str, Any] | None = None,
              timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, Any]:  # fmt: skip
    """Run the probe as a Ray job and return what it printed (no cache)."""
    script = Path(cluster_probe.__file__).read_text()
    sid = f"rayops-probe-{uuid.uuid4().hex[:12]}"
    client.submit(
        submission_id=sid,
        entrypoint=f"python -c {shlex.quote(script)} {shlex.quote(json.dumps(dict(request)))}",
        runtime_env=dict(runtime_env) if runtime_env else None,
        entrypoint_num_cpus=0,  # it runs even when every CPU is busy training
        metadata={"rayops_probe": "1"},
    )
    deadline = time.monotonic() + timeout_s
    while not (info := client.get_job(sid)) or not info.status.is_terminal():
        if time.monotonic() > deadline:
            client.stop(sid)
            raise BackendNotAvailable(  # a busy or scaling cluster: a retry of the task may find it ready
                f"the Ray cluster at {client.endpoint.dashboard_url} did not run rayops' probe job {sid} within "
                f"{timeout_s:.0f} s (is it out of resources, or its runtime_env agent failing?); see the job in the dashboard"
            )
        time.sleep(0.25)
    logs = client.get_logs(sid)
    for line in reversed(logs.splitlines()):
        if line.startswith(cluster_probe.MARKER):
            try:
                report = json.loads(line[len(cluster_probe.MARKER) :])
            except json.JSONDecodeError:
                break
            if isinstance(report, dict) and "python" in report:
                return report
            break
    if info.status is JobStatus.SUCCEEDED:
        raise BackendNotAvailable(f"rayops' probe job {sid} printed no readable report; its log ends: {logs[-500:]!r}")
    raise BackendNotAvailable(
        f"rayops' probe job {sid} {info.status.value.lower()} on the Ray cluster at {client.endpoint.dashboard_url} "
        f"(is `python` on the cluster's PATH a Python 3?): {(info.message or '').strip()[:300]} {logs[-500:]!r}"
    )


def probe_cluster(client: RayJobsClient, *, modules: Sequence[str] = (), cache_dir: Path | None = None,
                  ttl_s: float = PROBE_TTL_S) -> ClusterReport:  # fmt: skip
    """The cluster's report, from the cache when a probe of this cluster session is fresh enough.

    The cache key is the dashboard URL and what was asked; an entry is used only while the
    cluster's session (a restart starts a new one) is the one it was probed in."""
    version = client.version()
    request = probe_request(modules)
    key = json.dumps([client.endpoint.dashboard_url, request], sort_keys=True)
    path = (cache_dir or rayops_home() / "probes") / (hashlib.sha256(key.encode()).hexdigest()[:24] + ".json")
    session = str(version.get("session_name") or "")
    ray_version = str(version.get("ray_version") or "")
    try:
        entry = json.loads(path.read_text())
        if entry["session"] == session and time.time() - float(entry["at"]) < ttl_s:
            return ClusterReport.from_json(entry["report"], ray_version=ray_version)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    report = run_probe(client, request)
    write_atomically(path, json.dumps({"session": session, "at": time.time(), "report": report}))
    return ClusterReport.from_json(report, ray_version=ray_version)


# -- the decision ---------------------------------------------------------------------------------


def cluster_problems(report: ClusterReport, code: JobCode, mode: str) -> tuple[list[str], bool, list[str]]:
    """(what stops the job, whether to ship rayops' job code, warnings) for `report` under `mode`."""
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name

    profile_key = f"compute_profiles.{code.profile_name}.code" if code.profile_name else "the compute profile's code key"
    problems: list[str] = []
    warnings: list[str] = []
    needs_python = SpecifierSet(python_requirement())
    if code.rayops and report.python not in needs_python:
        problems.append(
            f"Python {report.python} on the cluster ({report.executable}); rayops jobs need Python {needs_python}: "
            f"run the cluster from such a Python ({README_SECTION})"
        )
    pip_names = {_requirement_name(line) for line in code.pip}
    for req in job_requirements() if code.rayops else ():
        name = canonicalize_name(req.name)
        if name in pip_names:
            continue  # the pipeline's runtime_env installs it
        installed = report.ray_version if name == "ray" and report.ray_version else report.installed(name)
        if installed is None:
            problems.append(
                f"{req.name} is not installed on the cluster; the jobs need {req.name}{req.specifier}: install "
                f"'{req.name}{req.specifier}' in the cluster's image, or add it to the pipeline's runtime_env.pip"
            )
        elif req.specifier and not req.specifier.contains(installed, prereleases=True):
            # Ray itself cannot be replaced per job; a library can, through the pipeline's runtime_env.
            per_job = "" if name == "ray" else ", or add it to the pipeline's runtime_env.pip"
            problems.append(
                f"{req.name} {installed} on the cluster; the jobs need {req.name}{req.specifier}: install "
                f"'{req.name}{req.specifier}' in the cluster's image{per_job} ({README_SECTION})"
            )
    ship_rayops = False
    found = report.rayops
    if code.rayops and mode == "ship":
        ship_rayops = True
    elif code.rayops and mode == "auto":
        ship_rayops = found is None or found.get("version") != __version__ or found.get("digest") != package_digest()
    elif code.rayops and found is None:
        problems.append(
            f"{DISTRIBUTION} is not installed on the cluster (this Airflow runs {__version__}); with code: image the "
            f"image must have it: {_INSTALL} there, or set {profile_key}: auto (or ship) to upload the job code "
            f"with each job"
        )
    elif code.rayops and found is not None and found.get("version") != __version__:
        problems.append(
            f"{DISTRIBUTION} {found.get('version')} is installed on the cluster ({found.get('path')}), but this "
            f"Airflow runs {__version__}: the job code must be the same version; {_INSTALL} in the image, or set "
            f"{profile_key}: auto (or ship) to upload it"
        )
    elif code.rayops and found is not None and found.get("digest") != package_digest():
        warnings.append(
            f"the cluster's {DISTRIBUTION} {__version__} ({found.get('path')}) has other files than this Airflow's "
            f"(a development install?); its code runs. Set {profile_key}: ship to run exactly this code"
        )
    if mode == "image":
        for module, module_name in zip(code.modules, module_names(code), strict=True):
            if not report.modules.get(module_name):
                problems.append(
                    f"module {module_name!r} of the pipeline (from {module}) is not importable on the cluster; with code: "
                    f"image it must be installed there, or set {profile_key}: auto (or ship) to upload it from the project"
                )
    return problems, ship_rayops, warnings


def _requirement_name(line: str) -> str:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    return canonicalize_name(Requirement(line).name)


def module_names(code: JobCode) -> list[str]:
    return [Path(m).stem if Path(m).suffix == ".py" else Path(m).name for m in code.modules]


def code_mode(profile: Any) -> str:
    """How a profile's jobs get their code: "local" (the embedded head runs this very Python, so
    rayops is there and only the pipeline's modules are sent), or a `ray` profile's `code:`
    (auto, ship, image). A profile without the key (kuberay) trusts its image."""
    return "local" if isinstance(profile, LocalProfile) else str(getattr(profile, "code", "image"))


def pipeline_packages(code: JobCode, *, max_mb: float | None) -> list[code_package.CodePackage]:
    """The pipeline's own modules as py_modules packages: guarded (never data, keys or rayops'
    state, whatever excludes say), capped at the profile's code_max_mb. CodeNotShippable names
    the module and the key to change."""
    key = f"compute_profiles.{code.profile_name}.code_max_mb" if code.profile_name else "the profile's code_max_mb"
    return [
        code_package.pack_module(
            Path(module),
            label=f"module {Path(module).name} of the pipeline",
            excludes=code.excludes,
            guarded=True,
            project_dir=Path(code.project_dir) if code.project_dir else None,
            max_bytes=int(max_mb * code_package.MIB) if max_mb else code_package.RAY_PACKAGE_LIMIT,
            fix=f"Leave files out with runtime_env.excludes in the pipeline, or raise {key} in defaults.yaml.",
        )
        for module in code.modules
    ]


def prepare_job_code(
    client: RayJobsClient,
    profile: LocalProfile | RayClusterProfile | Any,
    code: JobCode,
    *,
    log: Callable[[str], None] | None = None,
    cache_dir: Path | None = None,
) -> PreparedCode:
    """Check the cluster and upload what the job must be sent; ClusterNotReady when it cannot run it."""
    mode = code_mode(profile)
    max_mb = getattr(profile, "code_max_mb", None)
    needs_probe = mode in ("auto", "image", "ship") and (code.rayops or (mode == "image" and code.modules))
    ship_rayops, notes = False, []
    if needs_probe:
        report = probe_cluster(client, modules=module_names(code) if mode == "image" else (), cache_dir=cache_dir)
        problems, ship_rayops, warnings = cluster_problems(report, code, mode)
        if problems:
            where = f"compute profile {code.profile_name!r}, " if code.profile_name else ""
            raise ClusterNotReady(
                f"the Ray cluster at {client.endpoint.dashboard_url} cannot run this job ({where}code: {mode}):\n"
                + "\n".join(f"  - {p}" for p in problems)
            )
        notes += warnings
        if code.rayops and not ship_rayops:
            notes.append(
                f"the cluster's image has {DISTRIBUTION} {__version__} ({(report.rayops or {}).get('path')}); not shipping it"
            )
    packages = [rayops_package()] if ship_rayops else []
    if mode != "image":
        packages += pipeline_packages(code, max_mb=max_mb)
    uploaded = tuple(p.uri for p in packages if code_package.upload(client, p))
    prepared = PreparedCode(
        py_modules=tuple(p.uri for p in packages), shipped=tuple(packages), uploaded=uploaded, notes=tuple(notes)
    )
    if log is not None:
        for line in prepared.describe():
            log(line)
    return prepared
