"""What pipeline YAML may reach: environment variables, data and storage paths, training code.

Many people commit pipeline files; the platform team owns `dag_configs/defaults.yaml`. Its
`security:` section (and only there: a pipeline file cannot widen its own limits) says

    security:
      env_prefixes: [RAYOPS_]        # ${VAR} expands only names with these prefixes...
      env_names: [DATA_BUCKET]       # ...or these exact names; every other name is refused
      source_roots: [s3://lake/]     # where data.source may read, besides the defaults below
      storage_roots: [s3://ml/]      # where storage.root may write, besides the defaults below
      entrypoint_modules: [acme.ml]  # packages train.entrypoint may import, besides the defaults
      job_env_vars: [HF_HUB_OFFLINE] # names runtime_env.env_vars may set, besides thread counts
      notifier_modules: [acme.alerts] # packages alerts[].notifier may import, besides Airflow providers' notifiers

Defaults: sources in the project folder (the parent of dag_configs/) or under the storage
root (the whole bucket for s3://); storage in the project folder or under the storage root
defaults.yaml names; training loops built in (`rayops.builtin:*`) or modules whose files lie
in the project folder. Every check names the root or prefix that would have to be added.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from typing import Annotated

from pydantic import Field

from airflow_provider_rayops.config.compute import ENV_NAME, env_listed
from airflow_provider_rayops.config.schema import _URI, Spec
from airflow_provider_rayops.storage.uri import InvalidURIError, is_within, parse_uri, resolve_uri

BUILTIN_MODULE = "rayops.builtin"
# Variables runtime_env.env_vars may set unless defaults.yaml says otherwise: tuning knobs only.
DEFAULT_JOB_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "TOKENIZERS_PARALLELISM",
    "NCCL_DEBUG",
    "PYTORCH_CUDA_ALLOC_CONF",
    "CUBLAS_WORKSPACE_CONFIG",
)
# Never settable from YAML, whatever defaults.yaml allows: they decide which code runs, or
# carry what rayops itself hands a job (its arguments, MLflow and S3 credentials, Ray's address).
JOB_ENV_NEVER = ("PATH", "PYTHON*", "LD_*", "DYLD_*", "RAYOPS_*", "MLFLOW_*", "AWS_*", "RAY_ADDRESS", "RAY_AUTH*")
SECTION = "security"
Root = Annotated[str, Field(pattern=_URI)]


class SecurityPolicy(Spec):
    """Limits on what pipeline YAML may reach. Set only in defaults.yaml's `security:` section."""

    env_prefixes: list[str] = Field(
        default_factory=lambda: ["RAYOPS_"],
        description="${VAR} expands only environment variables whose names start with one of these.",
    )
    env_names: list[str] = Field(
        default_factory=list, description="Further environment variables ${VAR} may expand, by exact name."
    )
    source_roots: list[Root] = Field(
        default_factory=list,
        description="Further URIs (file:// or s3://) under which data.source may read; the project folder and "
        "the storage root's bucket are always allowed.",
    )
    storage_roots: list[Root] = Field(
        default_factory=list,
        description="Further URIs under which storage.root may write; the project folder and the storage root "
        "of defaults.yaml are always allowed.",
    )
    entrypoint_modules: list[str] = Field(
        default_factory=list,
        description="Python packages (dotted prefixes) train.entrypoint may import, besides the built-in loops "
        "and modules whose files lie in the project folder.",
    )
    notifier_modules: list[str] = Field(
        default_factory=list,
        description="Python packages (dotted prefixes) alerts[].notifier may import, besides Airflow's providers' "
        "notification modules (airflow.providers.<name>.notifications.*).",
    )

    job_env_vars: list[Annotated[str, Field(pattern=ENV_NAME)]] = Field(
        default_factory=lambda: list(DEFAULT_JOB_ENV_VARS),
        description="Environment variables runtime_env.env_vars may set in jobs: names, or prefixes ending in *. "
        "PATH, PYTHON*, LD_*, RAYOPS_*, MLFLOW_*, AWS_* and Ray's address and token are never allowed.",
    )

    def job_env_refusal(self, name: str) -> str | None:
        """None when runtime_env.env_vars may set `name`, else why not."""
        if env_listed(name, JOB_ENV_NEVER):
            return (
                f"{name} cannot be set from a pipeline: it decides which code runs or carries what rayops hands a "
                "job itself (credentials come from Airflow connections)"
            )
        if env_listed(name, self.job_env_vars):
            return None
        return (
            f"{name} is not among the variables jobs may be given ({', '.join(self.job_env_vars) or 'none'}); a "
            f"platform admin can add it to security.job_env_vars in defaults.yaml"
        )

    def env_refusal(self, name: str) -> str | None:
        """None when ${name} may be expanded, else why not (never reads the variable)."""
        if name in self.env_names or any(name.startswith(p) for p in self.env_prefixes if p):
            return None
        allowed = ", ".join([f"{p}*" for p in self.env_prefixes] + self.env_names) or "(none)"
        return (
            f"only variables named {allowed} may be expanded in pipeline configs; "
            f"a platform admin can add {name} to security.env_names in defaults.yaml"
        )


def _resolved(uris: list[str], project_dir: Path) -> list[str]:
    out = []
    for uri in uris:
        try:
            out.append(resolve_uri(uri, base_dir=project_dir))
        except InvalidURIError:
            continue  # reported when the policy itself is validated
    return out


def folder_uri(uri: str) -> str:
    """`uri` as a folder: with one trailing slash."""
    return uri.rstrip("/") + "/"


def project_root_uri(project_dir: Path) -> str:
    return folder_uri(f"file://{project_dir.resolve()}")


def bucket_or_folder(root: str) -> str:
    """The area a storage root opens for reading: the whole bucket for s3://, the folder for file://."""
    parsed = parse_uri(root)
    return f"s3://{parsed.bucket}/" if parsed.scheme == "s3" else folder_uri(str(parsed))


def source_roots(policy: SecurityPolicy, *, project_dir: Path, storage_root: str | None) -> list[str]:
    """Where data may be read from, as absolute URIs."""
    roots = [project_root_uri(project_dir)]
    if storage_root:
        roots.append(bucket_or_folder(resolve_uri(storage_root, base_dir=project_dir)))
    return list(dict.fromkeys(roots + _resolved(policy.source_roots, project_dir)))


def storage_roots(policy: SecurityPolicy, *, project_dir: Path, platform_root: str | None) -> list[str]:
    """Where a pipeline may write, as absolute URIs."""
    roots = [project_root_uri(project_dir)]
    if platform_root:
        roots.append(folder_uri(resolve_uri(platform_root, base_dir=project_dir)))
    return list(dict.fromkeys(roots + _resolved(policy.storage_roots, project_dir)))


def outside_roots_message(uri: str, roots: list[str], *, what: str, key: str) -> str | None:
    """None when `uri` lies under one of `roots`; else a message naming the roots and the fix."""
    if any(is_within(uri, root) for root in roots):
        return None
    parsed = parse_uri(uri)
    needed = f"s3://{parsed.bucket}/" if parsed.scheme == "s3" else folder_uri(f"file://{Path(parsed.path).parent}")
    return (
        f"{what} {uri} is outside the allowed roots ({', '.join(roots)}); a platform admin can allow it by "
        f"adding a root that contains it (e.g. {needed}) to security.{key} in defaults.yaml"
    )


# Notifier arguments that would read a file where Airflow parses DAGs (a template, attachments), or
# that hold a secret (which belongs in an Airflow connection, not in YAML the UI shows).
_FILE_ARGUMENTS = re.compile(r"(^|_)(template|files?|path)(_|$)", re.IGNORECASE)
_SECRET_ARGUMENTS = re.compile(r"password|secret|token|api_?key|integration_?key|routing_?key|webhook|credential", re.IGNORECASE)


def notifier_refusal(path: str, policy: SecurityPolicy) -> str | None:
    """None when alerts[].notifier's class may be imported: an Airflow provider's notifier, or a package of
    security.notifier_modules. Never imports anything."""
    module = path.rpartition(".")[0]
    parts = module.split(".")
    if len(parts) >= 4 and parts[:2] == ["airflow", "providers"] and "notifications" in parts[3:]:
        return None
    if any(module == p or module.startswith(p + ".") for p in policy.notifier_modules if p):
        return None
    return (
        f"{path!r} is not an Airflow provider's notifier (airflow.providers.<name>.notifications.<module>.<Class>); "
        "a platform admin can allow its package in security.notifier_modules in defaults.yaml"
    )


def notifier_argument_refusal(name: str, value: object) -> str | None:
    """None when a notifier argument may come from YAML: never a file to read, never a secret."""
    if name.endswith("conn_id"):
        return None
    if _SECRET_ARGUMENTS.search(name):
        return "secrets come from Airflow connections, not YAML: give the notifier's *_conn_id instead"
    if _FILE_ARGUMENTS.search(name) or (isinstance(value, str) and value.strip().startswith(("/", "~", "file:", "./", "../"))):
        return "a notifier reads no file named in YAML (it would read it on the machines that parse DAGs)"
    return None


def entrypoint_refusal(module: str, policy: SecurityPolicy, *, project_dir: Path) -> str | None:
    """None when train.entrypoint's module may be imported; else why not. Never imports anything."""
    if module == BUILTIN_MODULE or any(module == p or module.startswith(p + ".") for p in policy.entrypoint_modules if p):
        return None
    top = module.split(".")[0]
    hint = (
        f"put the loop in a module of the project folder ({project_dir}), or ask a platform admin to add "
        f"its package to security.entrypoint_modules in defaults.yaml"
    )
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        return f"module {module!r} is part of Python's standard library, not a training loop; {hint}"
    relative = Path(*module.split("."))
    candidates = [project_dir / relative.with_suffix(".py"), project_dir / relative / "__init__.py"]
    if not any(c.is_file() for c in candidates):
        return f"module {module!r} is neither a built-in loop (rayops.builtin:...) nor a file in the project folder; {hint}"
    if project_code_path(module + ":x", project_dir=project_dir) is None:
        return (
            f"module {module!r} comes from a symlink in the project folder ({project_dir / top}); jobs are sent "
            "only files that live there: replace the link with the files"
        )
    # A project file named like an installed package would be shadowed by it at import time.
    try:
        spec = importlib.util.find_spec(top)  # a top-level name: searched, never executed
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec else []
    origin = spec.origin if spec and spec.origin not in (None, "namespace") else None
    places = [Path(p) for p in locations] + ([Path(origin)] if origin else [])
    project = project_dir.resolve()
    if places and not any(p.resolve().is_relative_to(project) for p in places):
        return f"module {top!r} is an installed package ({places[0]}), which a file of the same name in the project would not replace; {hint}"
    return None


def project_code_path(entrypoint: str, *, project_dir: Path) -> Path | None:
    """What a pipeline ships of its own code for `train.entrypoint`: the top-level package folder
    (or single module file) its module is imported from in the project folder, found in Python's
    own order (a package with __init__.py, then a module file, then a namespace folder). None for
    the built-in loops and for modules that do not live there (installed packages allowed by
    security.entrypoint_modules). A symlink is never followed: it could lead anywhere."""
    module = entrypoint.partition(":")[0]
    if module == BUILTIN_MODULE:
        return None
    top = module.split(".")[0]
    folder, file = project_dir / top, project_dir / f"{top}.py"
    for candidate, found in (
        (folder, (folder / "__init__.py").is_file()),
        (file, file.is_file()),
        (folder, folder.is_dir()),
    ):
        if found:
            return None if candidate.is_symlink() else candidate.absolute()
    return None
