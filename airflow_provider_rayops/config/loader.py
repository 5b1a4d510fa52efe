"""Load pipeline YAML files into validated `PipelineSpec`s, collecting every error.

`dag_configs/defaults.yaml` holds keys shared by every pipeline (compute profiles,
storage, owner...); each pipeline file is deep-merged over it, the pipeline winning.
Errors point at whichever file the offending key came from.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from pydantic import BaseModel, ValidationError

from airflow_provider_rayops import __version__
from airflow_provider_rayops.config import stages
from airflow_provider_rayops.config.errors import ConfigError, ConfigIssue
from airflow_provider_rayops.config.schema import _NAME, _URI, PipelineSpec
from airflow_provider_rayops.config.yaml_source import KeyPath, YamlDocument, load_yaml

DEFAULTS_FILE = "defaults.yaml"

# URI fields whose relative file:// paths resolve against the project folder.
_URI_FIELDS: tuple[KeyPath, ...] = (("data", "source"), ("storage", "root"), ("monitor", "current"))


@dataclass(frozen=True)
class LoadedPipeline:
    """A validated pipeline and where it came from."""

    spec: PipelineSpec
    file: str
    source_text: str
    config_hash: str


def project_dir_of(config_dir: Path) -> Path:
    """Relative file:// URIs in YAML resolve against the folder holding dag_configs/."""
    return config_dir.resolve().parent


class _Merged:
    """The pipeline document merged over defaults, remembering each key's file and position."""

    def __init__(self, pipeline: YamlDocument, defaults: YamlDocument | None):
        self.docs = [pipeline] + ([defaults] if defaults else [])
        self.value = _deep_merge(defaults.value if defaults and isinstance(defaults.value, dict) else {}, pipeline.value)

    def issue(self, path: KeyPath, message: str) -> ConfigIssue:
        best, best_len = self.docs[0], -1
        for doc in self.docs:
            for end in range(len(path), -1, -1):
                if tuple(path[:end]) in doc.positions:
                    if end > best_len:
                        best, best_len = doc, end
                    break
        return best.issue(path, message)


def _deep_merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = _deep_merge(base[key], value) if key in base else value
        return out
    return override


def load_defaults(config_dir: Path, *, env: Mapping[str, str] | None = None) -> YamlDocument | None:
    path = config_dir / DEFAULTS_FILE
    if not path.exists():
        return None
    doc = load_yaml(path.read_text(encoding="utf-8"), file=str(path), env=env)
    if doc.value is not None and not isinstance(doc.value, dict):
        doc.issues.append(doc.issue((), "defaults.yaml must be a mapping of pipeline keys shared by every pipeline"))
        doc.value = {}
    elif isinstance(doc.value, dict):
        if "pipeline" in doc.value:
            doc.issues.append(doc.issue(("pipeline",), "the pipeline name belongs in each pipeline's own file, not in defaults.yaml"))
        for key in doc.value:
            if key not in PipelineSpec.model_fields:
                doc.issues.append(doc.issue((key,), _unknown_key_message(key, PipelineSpec.model_fields)))
    return doc


def load_pipeline(
    path: Path,
    *,
    defaults: YamlDocument | None = None,
    text: str | None = None,
    env: Mapping[str, str] | None = None,
    project_dir: Path | None = None,
) -> LoadedPipeline:
    """Validate one pipeline file over the defaults; raises ConfigError with every problem found."""
    text = path.read_text(encoding="utf-8") if text is None else text
    doc = load_yaml(text, file=str(path), env=env)
    issues = list(doc.issues)
    if issues and doc.value is None:
        raise ConfigError(issues)
    if not isinstance(doc.value, dict):
        raise ConfigError([doc.issue((), "a pipeline file must be a mapping with at least `pipeline:` and `data:`")])
    merged = _Merged(doc, defaults)
    data = merged.value
    _resolve_relative_uris(data, project_dir or project_dir_of(path.parent))
    spec = None
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        issues += [_issue_from_pydantic(err, data, merged) for err in exc.errors(include_url=False)]
    issues += _semantic_issues(data, merged)
    if issues or spec is None:
        raise ConfigError(issues)
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return LoadedPipeline(
        spec=spec,
        file=str(path),
        source_text=text,
        config_hash=hashlib.sha256(canonical.encode()).hexdigest(),
    )


def _resolve_relative_uris(data: dict, project_dir: Path) -> None:
    for path in _URI_FIELDS:
        parent = data
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        value = parent.get(path[-1]) if isinstance(parent, dict) else None
        if isinstance(value, str) and value.startswith("file://") and not value.startswith("file:///"):
            parent[path[-1]] = "file://" + str((project_dir / value[len("file://") :]).resolve())


def _semantic_issues(data: dict, merged: _Merged) -> list[ConfigIssue]:
    """Checks across sections. They read the raw merged mapping, so they are reported
    together with schema errors rather than after the schema errors are fixed."""
    issues: list[ConfigIssue] = []
    profiles = data.get("compute_profiles") if isinstance(data.get("compute_profiles"), dict) else {}
    compute = data.get("compute", "local")
    if isinstance(compute, str) and compute not in profiles:
        known = sorted(profiles)
        hint = difflib.get_close_matches(compute, known, n=1)
        msg = f"unknown compute profile {compute!r}; " + (
            f"did you mean {hint[0]!r}?" if hint else f"expected one of: {', '.join(known) or '(none defined in defaults.yaml)'}"
        )
        issues.append(merged.issue(("compute",), msg))
    elif isinstance(compute, str) and isinstance(profiles[compute], dict):
        backend = profiles[compute].get("backend")
        if backend in stages.BACKENDS_NOT_YET:
            issues.append(
                merged.issue(
                    ("compute",),
                    f"compute profile {compute!r} uses backend {backend!r}, which is not available yet: "
                    f"{stages.BACKENDS_NOT_YET[backend]}",
                )
            )
    for section, why in stages.NOT_YET.items():
        if data.get(section) is not None:
            issues.append(
                merged.issue(
                    (section,),
                    f"the {section} stage is not available yet in rayops {__version__}: {why}; remove the section to load this pipeline",
                )
            )
    tracked = [s for s in stages.TRACKED if data.get(s) is not None]
    tracking = data.get("tracking") if isinstance(data.get("tracking"), dict) else {}
    profile = profiles.get(compute) if isinstance(compute, str) else None
    if tracked and not tracking.get("conn_id") and isinstance(profile, dict) and profile.get("backend", "local") != "local":
        issues.append(
            merged.issue(
                ("tracking",),
                f"the {tracked[0]} stage on compute profile {compute!r} needs tracking.conn_id (a rayops_mlflow "
                "connection): the embedded MLflow store lives on this machine, out of the cluster's reach",
            )
        )
    issues += _gate_metric_issues(data, merged)
    for section, needs in stages.REQUIRES.items():
        if data.get(section) is not None and data.get(needs) is None:
            issues.append(merged.issue((section,), f"the {section} stage needs a {needs} section"))
    return issues


def _gate_metric_issues(data: dict, merged: _Merged) -> list[ConfigIssue]:
    """A gate can only judge a metric the evaluate stage computes."""
    evaluate = data.get("evaluate")
    if not isinstance(evaluate, dict) or not isinstance(evaluate.get("gates"), list):
        return []
    computed = evaluate.get("metrics", ["accuracy", "auc"])
    if not isinstance(computed, list):
        return []
    issues = []
    for i, gate in enumerate(evaluate["gates"]):
        metric = gate.get("metric") if isinstance(gate, dict) else None
        if isinstance(metric, str) and metric not in computed:
            hint = difflib.get_close_matches(metric.removeprefix("val_"), [str(m) for m in computed], n=1, cutoff=0.6)
            msg = f"gate metric {metric!r} is not in evaluate.metrics ({', '.join(map(str, computed))}); " + (
                f"did you mean {hint[0]!r}?" if hint else "add it there or gate on a computed metric"
            )
            issues.append(merged.issue(("evaluate", "gates", i, "metric"), msg))
    return issues


# --- pydantic errors -> ConfigIssue ---------------------------------------------------------


def _yaml_path(loc: tuple, data: Any) -> KeyPath:
    """Drop the parts of a pydantic location that are not keys in the data (union tags, validator names)."""
    out: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part in node:
            out.append(part)
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
        elif not isinstance(node, (dict, list)):
            break
        elif isinstance(node, dict) and isinstance(part, str) and part not in _UNION_TAGS:
            out.append(part)  # a missing or unknown key: still name it
            node = None
    return tuple(out)


_UNION_TAGS = {"local", "ray", "kuberay", "function-after", "function-before", "function-wrap", "tuple"}


def _model_at(path: KeyPath, data: Any) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at `path`."""
    annotation: Any = PipelineSpec
    node = data
    for part in path:
        annotation = _resolve_model(annotation, node)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part) if isinstance(part, str) else None
            if field is None:
                return None
            annotation = field.annotation
        else:
            origin, args = typing.get_origin(annotation), typing.get_args(annotation)
            if origin is dict and args:
                annotation = args[1]
            elif origin is list and args:
                annotation = args[0]
            else:
                return None
        node = node.get(part) if isinstance(node, dict) else (node[part] if isinstance(node, list) and isinstance(part, int) and part < len(node) else None)
    annotation = _resolve_model(annotation, node)
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _resolve_model(annotation: Any, node: Any) -> Any:
    """Unwrap Optional/Annotated/Union down to the model the data picks."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
            continue
        if origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            if len(members) == 1:
                annotation = members[0]
                continue
            if models and isinstance(node, dict):
                for model in models:
                    tag = model.model_fields.get("backend")
                    if tag is not None and node.get("backend") in typing.get_args(tag.annotation):
                        return model
                return models[0]
            return annotation
        return annotation


_PATTERN_MEANING = {
    _URI: "expected a URI starting with file:// or s3://",
    _NAME: "expected a name of lowercase letters, digits, '-' and '_', starting with a letter (at most 63)",
}


def _unknown_key_message(key: str, allowed: Mapping[str, Any]) -> str:
    hint = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    if hint:
        return f"unknown key {key!r}; did you mean {hint[0]!r}?"
    return f"unknown key {key!r}; expected one of: {', '.join(allowed)}"


def _issue_from_pydantic(err: dict, data: Any, merged: _Merged) -> ConfigIssue:
    loc = tuple(err["loc"])
    path = _yaml_path(loc, data)
    kind = err["type"]
    found = err.get("input")
    if kind == "extra_forbidden":
        model = _model_at(path[:-1], data)
        allowed = model.model_fields if model else {}
        return merged.issue(path, _unknown_key_message(str(path[-1]), allowed))
    if kind == "missing":
        model = _model_at(path[:-1], data)
        field = model.model_fields.get(str(path[-1])) if model else None
        what = f" ({field.description})" if field and field.description else ""
        return merged.issue(path, f"required key missing{what}")
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return merged.issue(path + ("backend",), f"expected backend one of {ctx.get('expected_tags')}, found {ctx.get('tag')!r}")
    if kind == "union_tag_not_found":
        return merged.issue(path, "required key missing: backend (one of 'local', 'ray', 'kuberay')")
    msg = err["msg"]
    pattern = err.get("ctx", {}).get("pattern") if kind == "string_pattern_mismatch" else None
    if pattern in _PATTERN_MEANING:
        msg = _PATTERN_MEANING[pattern]
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    elif msg.startswith("Input should be "):
        msg = "expected " + msg[len("Input should be ") :]
    if "found" not in msg and not isinstance(found, (dict, list)):
        msg += f", found {found!r}"
    return merged.issue(path, msg)


# --- a whole folder --------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigDirResult:
    """Every pipeline of a folder: those that loaded, and the errors of those that did not, by file."""

    pipelines: list[LoadedPipeline]
    errors: dict[str, ConfigError]


def pipeline_files(config_dir: Path) -> list[Path]:
    return sorted(p for p in config_dir.glob("*.y*ml") if p.suffix in (".yaml", ".yml") and p.name != DEFAULTS_FILE)


def load_config_dir(config_dir: Path, *, env: Mapping[str, str] | None = None, files: list[Path] | None = None) -> ConfigDirResult:
    """Load every pipeline of a folder; one broken file never hides the others."""
    env = os.environ if env is None else env
    config_dir = Path(config_dir)
    project_dir = project_dir_of(config_dir)
    defaults = load_defaults(config_dir, env=env)
    defaults_error = ConfigError(defaults.issues) if defaults and defaults.issues else None
    loaded: list[LoadedPipeline] = []
    errors: dict[str, ConfigError] = {}
    for path in files if files is not None else pipeline_files(config_dir):
        try:
            pipeline = load_pipeline(path, defaults=defaults, env=env, project_dir=project_dir)
        except ConfigError as exc:
            errors[str(path)] = ConfigError(exc.issues + (defaults_error.issues if defaults_error else []))
            continue
        if defaults_error:
            errors[str(path)] = defaults_error
            continue
        loaded.append(pipeline)
    return check_unique_names(loaded, errors, env=env)


def check_unique_names(
    loaded: list[LoadedPipeline], errors: dict[str, ConfigError], *, env: Mapping[str, str] | None = None
) -> ConfigDirResult:
    """Two files may not define the same pipeline: the later file (by name) is the error."""
    names: dict[str, str] = {}
    unique: list[LoadedPipeline] = []
    for pipeline in loaded:
        first = names.setdefault(pipeline.spec.pipeline, pipeline.file)
        if first != pipeline.file:
            doc = load_yaml(pipeline.source_text, file=pipeline.file, env=env)
            errors[pipeline.file] = ConfigError(
                [doc.issue(("pipeline",), f"pipeline name {pipeline.spec.pipeline!r} is already used by {first}")]
            )
            continue
        unique.append(pipeline)
    return ConfigDirResult(pipelines=unique, errors=errors)
