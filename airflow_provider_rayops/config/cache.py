"""Skip re-validating unchanged pipeline files across DAG-file parses.

Airflow's dag-processor re-imports the dags file every 30 s in a fresh process, so an
in-memory cache would not survive; this one is a JSON file per config folder. An entry
is keyed by everything that can change the result: the file's text, defaults.yaml's
text, the values of the ${VARS} they may expand (names the security policy refuses are
never read, so no value of theirs reaches the key), the project folder, and rayops'
version with a hash of the config plane's own code (a changed rule is never hidden by an
old entry). JSON, not pickle: a cache file must never be able to run code.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from airflow_provider_rayops import __version__
from airflow_provider_rayops.config.errors import ConfigError, ConfigIssue
from airflow_provider_rayops.config.home import rayops_home
from airflow_provider_rayops.config.loader import (
    DEFAULTS_FILE,
    ConfigDirResult,
    LoadedPipeline,
    check_unique_names,
    load_defaults,
    load_pipeline,
    pipeline_files,
    project_dir_of,
)
from airflow_provider_rayops.config.policy import SecurityPolicy
from airflow_provider_rayops.config.schema import TRUSTED_CACHE, PipelineSpec
from airflow_provider_rayops.config.yaml_source import read_config_text, variable_names


@functools.lru_cache(maxsize=1)
def loader_code_hash() -> str:
    """A hash of the config plane's source: entries written by other code are not trusted."""
    h = hashlib.sha256(__version__.encode())
    for source in sorted(Path(__file__).parent.glob("*.py")):
        h.update(source.name.encode() + b"\0" + source.read_bytes())
    return h.hexdigest()


def default_cache_dir() -> Path:
    if os.environ.get("RAYOPS_CACHE_DIR"):
        return Path(os.environ["RAYOPS_CACHE_DIR"])
    return rayops_home() / "cache"


def _entry_key(text: str, defaults_text: str, project_dir: Path, env: Mapping[str, str], policy: SecurityPolicy) -> str:
    names = sorted(n for n in variable_names(text) | variable_names(defaults_text) if policy.env_refusal(n) is None)
    h = hashlib.sha256()
    unset = "\0unset"
    for part in (loader_code_hash(), str(project_dir), defaults_text, text, *(f"{n}={env.get(n, unset)}" for n in names)):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def load_config_dir_cached(
    config_dir: Path, *, cache_dir: Path | None = None, env: Mapping[str, str] | None = None
) -> ConfigDirResult:
    """Like `load_config_dir`, validating only files that changed since the last call."""
    env = os.environ if env is None else env
    config_dir = Path(config_dir)
    project_dir = project_dir_of(config_dir)
    cache_dir = cache_dir or default_cache_dir()
    cache_file = cache_dir / (hashlib.sha1(str(config_dir.resolve()).encode()).hexdigest()[:16] + ".json")
    try:
        cache: dict = json.loads(cache_file.read_text())
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    defaults_path = config_dir / DEFAULTS_FILE
    try:
        defaults_text = read_config_text(defaults_path) if defaults_path.exists() else ""
    except ConfigError:
        defaults_text = None  # unreadable: every pipeline gets its error, nothing is cached
    defaults = None  # parsed only if some file missed the cache
    policies = cache.get("policies")
    if not isinstance(policies, dict):
        policies = {}
    defaults_key = hashlib.sha256(f"{loader_code_hash()}\0{defaults_text}".encode()).hexdigest()
    policy = _policy_from(policies.get(defaults_key))
    if policy is None or defaults_text is None:
        defaults = load_defaults(config_dir, env=env)
        policy = defaults.policy
    new_cache: dict = {"policies": {defaults_key: policy.model_dump(mode="json")}}
    loaded: list[LoadedPipeline] = []
    errors: dict[str, ConfigError] = {}
    for path in pipeline_files(config_dir):
        try:
            text = read_config_text(path)
        except ConfigError:  # too big or not UTF-8: load_pipeline reports it (with defaults' issues)
            text = None
        if text is None:
            defaults = defaults or load_defaults(config_dir, env=env)
            try:
                load_pipeline(path, defaults=defaults, env=env, project_dir=project_dir)
            except ConfigError as exc:
                errors[str(path)] = exc
            continue
        key = _entry_key(text, defaults_text or "", project_dir, env, policy)
        entry = cache.get(key)
        result = _from_entry(entry, path, text) if isinstance(entry, dict) else None
        if result is None:
            if defaults is None:
                defaults = load_defaults(config_dir, env=env)
            try:
                result = load_pipeline(path, defaults=defaults, text=text, env=env, project_dir=project_dir)
            except ConfigError as exc:
                result = exc
            entry = _to_entry(result)
        if defaults_text is not None:
            new_cache[key] = entry
        if isinstance(result, ConfigError):
            errors[str(path)] = result
        else:
            loaded.append(result)
    if set(new_cache) != set(cache) or new_cache["policies"] != cache.get("policies"):
        write_atomically(cache_file, json.dumps(new_cache))
    return check_unique_names(loaded, errors)


def _policy_from(entry: object) -> SecurityPolicy | None:
    try:
        return SecurityPolicy.model_validate(entry) if entry is not None else None
    except ValidationError:
        return None


def _to_entry(result: LoadedPipeline | ConfigError) -> dict:
    if isinstance(result, ConfigError):
        return {"errors": [vars(i) for i in result.issues]}
    return {
        "spec": result.spec.model_dump(mode="json"),
        "config_hash": result.config_hash,
        "project_dir": result.project_dir,
        "source_roots": list(result.source_roots),
    }


def _from_entry(entry: dict, path: Path, text: str) -> LoadedPipeline | ConfigError | None:
    try:
        if "errors" in entry:
            return ConfigError([ConfigIssue(**i) for i in entry["errors"]])
        spec = PipelineSpec.model_validate(entry["spec"], context={TRUSTED_CACHE: True})
        return LoadedPipeline(
            spec=spec,
            file=str(path),
            source_text=text,
            config_hash=entry["config_hash"],
            project_dir=str(entry["project_dir"]),
            source_roots=tuple(str(r) for r in entry["source_roots"]),
        )
    except (ValidationError, KeyError, TypeError):
        return None  # written by another version of the schema: validate afresh


def write_atomically(path: Path, text: str) -> None:
    """Write `text` whole or not at all (a concurrent reader never sees half a file); a failure to
    write is ignored: what is written this way is a cache."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache folder costs speed, never correctness
