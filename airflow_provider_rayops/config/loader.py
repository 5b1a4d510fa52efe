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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from airflow_provider_rayops import __version__
from airflow_provider_rayops.config import policy as policies
from airflow_provider_rayops.config import stages
from airflow_provider_rayops.config.compute import ENV_NAME
from airflow_provider_rayops.config.errors import ConfigError, ConfigIssue
from airflow_provider_rayops.config.policy import SecurityPolicy
from airflow_provider_rayops.config.schema import (
    _NAME,
    _URI,
    CLASSIFICATION_METRICS,
    DEFAULT_METRICS,
    LOOP_METRIC_TASK,
    REGRESSION_METRICS,
    PipelineSpec,
    task_claims,
)
from airflow_provider_rayops.config.yaml_source import (
    KeyPath,
    YamlDocument,
    expand_variables,
    format_path,
    load_yaml,
    read_config_text,
)

DEFAULTS_FILE = "defaults.yaml"

# URI fields whose relative file:// paths resolve against the project folder.
_URI_FIELDS: tuple[KeyPath, ...] = (
    ("data", "source"),
    ("storage", "root"),
    ("monitor", "current"),
    ("monitor", "reference"),
    ("monitor", "performance", "labels"),
)


@dataclass(frozen=True)
class LoadedPipeline:
    """A validated pipeline, where it came from, and where its data may be read at run time
    (`source_roots`: absolute URIs; a data source given when triggering must lie under one)."""

    spec: PipelineSpec
    file: str
    source_text: str
    config_hash: str
    project_dir: str = ""
    source_roots: tuple[str, ...] = ()


@dataclass(frozen=True)
class Defaults:
    """defaults.yaml: the keys every pipeline shares, and the platform's security policy."""

    doc: YamlDocument | None
    policy: SecurityPolicy
    project_dir: Path

    @property
    def issues(self) -> list[ConfigIssue]:
        return self.doc.issues if self.doc else []

    @property
    def value(self) -> dict:
        return self.doc.value if self.doc and isinstance(self.doc.value, dict) else {}

    @property
    def storage_root(self) -> str | None:
        """The platform's storage root (defaults.yaml's storage.root), if it names one."""
        storage = self.value.get("storage")
        root = storage.get("root") if isinstance(storage, dict) else None
        return root if isinstance(root, str) and _valid_uri(root) else None


def project_dir_of(config_dir: Path) -> Path:
    """Relative file:// URIs in YAML resolve against the folder holding dag_configs/."""
    return config_dir.resolve().parent


class _Merged:
    """The pipeline document merged over defaults, remembering each key's file and position."""

    def __init__(self, pipeline: YamlDocument, defaults: Defaults | None):
        self.docs = [pipeline] + ([defaults.doc] if defaults and defaults.doc else [])
        self.value = _deep_merge(defaults.value if defaults else {}, pipeline.value)

    def doc_of(self, path: KeyPath) -> YamlDocument:
        """The file that wrote the deepest part of `path`; the pipeline's own file on a tie (a
        missing key is the pipeline's to add, not defaults.yaml's)."""
        best, best_len = self.docs[0], -1
        for doc in self.docs:
            depth = doc.known_depth(path)
            if depth > best_len:
                best, best_len = doc, depth
        return best

    def issue(self, path: KeyPath, message: str, *, found: Any = None, show_found: bool = False) -> ConfigIssue:
        doc = self.doc_of(path)
        if show_found:
            names = doc.expanded_from(path)
            if names:  # never echo what an environment variable held
                message += f", found the value of {', '.join('${' + n + '}' for n in names)} (not shown)"
            else:
                message += f", found {found!r}"
        return doc.issue(path, message)


def _deep_merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = _deep_merge(base[key], value) if key in base else value
        return out
    return override


def load_defaults(config_dir: Path, *, env: Mapping[str, str] | None = None) -> Defaults:
    """Read defaults.yaml (if the folder has one): its `security:` policy first, taken literally,
    then the shared keys with ${VAR} expanded as that policy allows."""
    env = os.environ if env is None else env
    path = Path(config_dir) / DEFAULTS_FILE
    project_dir = project_dir_of(Path(config_dir))
    if not path.exists():
        return Defaults(doc=None, policy=SecurityPolicy(), project_dir=project_dir)
    try:
        doc = load_yaml(read_config_text(path), file=str(path))
    except ConfigError as exc:
        doc = YamlDocument(file=str(path), value={}, issues=list(exc.issues))
    if doc.value is None:
        doc.value = {}
    if not isinstance(doc.value, dict):
        doc.issues.append(doc.issue((), "defaults.yaml must be a mapping of pipeline keys shared by every pipeline"))
        doc.value = {}
    policy = _read_policy(doc)
    expand_variables(doc, env, policy.env_refusal)
    if "pipeline" in doc.value:
        doc.issues.append(doc.issue(("pipeline",), "the pipeline name belongs in each pipeline's own file, not in defaults.yaml"))
    for key in doc.value:
        if key not in PipelineSpec.model_fields:
            doc.issues.append(doc.issue((key,), _unknown_key_message(key, {**PipelineSpec.model_fields, policies.SECTION: None})))
    return Defaults(doc=doc, policy=policy, project_dir=project_dir)


def _read_policy(doc: YamlDocument) -> SecurityPolicy:
    """The `security:` section, taken out of the shared keys; the default policy if it is invalid
    (the errors are on `doc`, so nothing loads until it is fixed)."""
    raw = doc.value.pop(policies.SECTION, None)
    if raw is None:
        return SecurityPolicy()
    if "${" in json.dumps(raw):
        doc.issues.append(doc.issue((policies.SECTION,), "the security section is taken literally: ${...} is not expanded here"))
        return SecurityPolicy()
    try:
        return SecurityPolicy.model_validate(raw)
    except ValidationError as exc:
        data = {policies.SECTION: raw}
        for err in exc.errors(include_url=False):
            err = {**err, "loc": (policies.SECTION, *err["loc"])}
            doc.issues.append(_issue_from_pydantic(err, data, _Merged(doc, None), root=_PolicyRoot))
        return SecurityPolicy()


def load_pipeline(
    path: Path,
    *,
    defaults: Defaults | None = None,
    text: str | None = None,
    env: Mapping[str, str] | None = None,
    project_dir: Path | None = None,
) -> LoadedPipeline:
    """Validate one pipeline file over the defaults; raises ConfigError with every problem found.

    Whatever the file holds, the outcome is a LoadedPipeline or a ConfigError naming this file
    (or defaults.yaml): never another exception.
    """
    env = os.environ if env is None else env
    project_dir = project_dir or project_dir_of(path.parent)
    defaults = defaults if defaults is not None else Defaults(doc=None, policy=SecurityPolicy(), project_dir=project_dir)
    try:
        return _load_pipeline(path, defaults=defaults, text=text, env=env, project_dir=project_dir)
    except ConfigError:
        raise
    except Exception as exc:  # a bug of ours must still end as this file's error alone
        raise ConfigError(
            [
                ConfigIssue(
                    str(path), 1, 1, "", f"internal error while validating ({type(exc).__name__}); please report it to rayops"
                )
            ]
        ) from exc


def _load_pipeline(
    path: Path, *, defaults: Defaults, text: str | None, env: Mapping[str, str], project_dir: Path
) -> LoadedPipeline:
    try:
        text = read_config_text(path) if text is None else text
    except ConfigError as exc:
        raise ConfigError(exc.issues + defaults.issues) from None
    doc = load_yaml(text, file=str(path))
    issues = list(doc.issues) + defaults.issues  # a broken defaults.yaml holds every pipeline back
    if doc.value is None:
        if not doc.issues:
            what = "the file is empty" if doc.empty else "a pipeline file must be a mapping, not a single value"
            issues.append(doc.issue((), f"{what}; a pipeline needs at least `pipeline:` and `data:`"))
        raise ConfigError(issues)
    if not isinstance(doc.value, dict):
        raise ConfigError(issues + [doc.issue((), "a pipeline file must be a mapping with at least `pipeline:` and `data:`")])
    if policies.SECTION in doc.value:
        doc.value.pop(policies.SECTION)
        issues.append(
            doc.issue(
                (policies.SECTION,),
                "security settings belong in defaults.yaml (the platform team's file); a pipeline cannot change them",
            )
        )
    issues_before = len(doc.issues)
    expand_variables(doc, env, defaults.policy.env_refusal)
    issues += doc.issues[issues_before:]
    merged = _Merged(doc, defaults)
    data = merged.value
    _resolve_relative_uris(data, project_dir)
    spec = None
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors(include_url=False):
            key = _yaml_path(tuple(err["loc"]), data)  # not `path`: that is the file's, still needed below
            if not merged.doc_of(key).was_refused(key):
                issues.append(_issue_from_pydantic(err, data, merged))
    issues += _semantic_issues(data, merged)
    sources = None
    if spec is not None:
        sources = policies.source_roots(defaults.policy, project_dir=project_dir, storage_root=spec.storage.root)
        issues += _scope_issues(spec, merged, defaults, project_dir, sources)
    if issues or spec is None:
        for source in merged.docs:
            issues = [source.scrub(i) for i in issues]
        raise ConfigError(issues)
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return LoadedPipeline(
        spec=spec,
        file=str(path),
        source_text=text,
        config_hash=hashlib.sha256(canonical.encode()).hexdigest(),
        project_dir=str(project_dir.resolve()),
        source_roots=tuple(sources or ()),
    )


def _valid_uri(value: str) -> bool:
    from airflow_provider_rayops.storage.uri import InvalidURIError, parse_uri

    try:
        parse_uri(value, base_dir="/")
    except InvalidURIError:
        return False
    return True


def _resolve_relative_uris(data: dict, project_dir: Path) -> None:
    for path in _URI_FIELDS:
        parent: Any = data  # whatever the YAML holds on the way down
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
        value = parent.get(path[-1]) if isinstance(parent, dict) else None
        if isinstance(value, str) and value.startswith("file://") and not value.startswith("file:///") and "\x00" not in value:
            parent[path[-1]] = "file://" + str((project_dir / value[len("file://") :]).resolve())


def _scope_issues(
    spec: PipelineSpec, merged: _Merged, defaults: Defaults, project_dir: Path, sources: list[str]
) -> list[ConfigIssue]:
    """Where the pipeline reads (under `sources`), writes and imports from must lie inside what the platform allows."""
    policy = defaults.policy
    issues = []
    uris: dict[tuple[str, ...], str] = {("storage", "root"): spec.storage.root, ("data", "source"): spec.data.source}
    if spec.monitor is not None:
        monitored = {
            ("monitor", "current"): spec.monitor.current,
            ("monitor", "reference"): spec.monitor.reference,
            ("monitor", "performance", "labels"): spec.monitor.performance.labels if spec.monitor.performance else None,
        }
        uris.update({key: uri for key, uri in monitored.items() if uri is not None})
    uris = {key: uri for key, uri in uris.items() if not merged.doc_of(key).was_refused(key)}
    for key, uri in uris.items():
        if not _valid_uri(uri):
            issues.append(merged.issue(key, "not a usable URI (file:///path, file://relative/path or s3://bucket/key)"))
            return issues
    storage = policies.storage_roots(policy, project_dir=project_dir, platform_root=defaults.storage_root)
    problem = policies.outside_roots_message(spec.storage.root, storage, what="storage.root", key="storage_roots")
    if problem and ("storage", "root") in uris:
        issues.append(merged.issue(("storage", "root"), problem))
    for key, uri in uris.items():
        if key == ("storage", "root"):
            continue
        problem = policies.outside_roots_message(uri, sources, what=format_path(key), key="source_roots")
        if problem:
            issues.append(merged.issue(key, problem))
    pipeline_doc = merged.docs[0]
    for name in spec.compute_profiles:
        for setting, why in (
            ("env", "a pipeline cannot widen what jobs inherit"),
            ("code_max_mb", "a pipeline cannot raise the cap on the code it ships"),
        ):
            key = ("compute_profiles", name, setting)
            if pipeline_doc.known_depth(key) == len(key):  # the platform's call
                issues.append(
                    pipeline_doc.issue(
                        key, f"a compute profile's {setting} belongs in defaults.yaml (the platform team's file); {why}"
                    )
                )
    for i, alert in enumerate(spec.alerts):
        refusal = policies.notifier_refusal(alert.notifier, policy) if alert.notifier else None
        if refusal:
            issues.append(merged.issue(("alerts", i, "notifier"), refusal))
        for name, value in alert.kwargs.items():
            refusal = policies.notifier_argument_refusal(name, value)
            if refusal:
                issues.append(merged.issue(("alerts", i, "kwargs", name), refusal))
    for name in spec.runtime_env.env_vars:
        refusal = policy.job_env_refusal(name)
        if refusal:
            issues.append(merged.issue(("runtime_env", "env_vars", name), refusal))
    if spec.train is not None:
        module = spec.train.entrypoint.partition(":")[0]
        refusal = policies.entrypoint_refusal(module, policy, project_dir=project_dir)
        if refusal:
            issues.append(merged.issue(("train", "entrypoint"), refusal))
    return issues


def _semantic_issues(data: dict, merged: _Merged) -> list[ConfigIssue]:
    """Checks across sections. They read the raw merged mapping, so they are reported
    together with schema errors rather than after the schema errors are fixed."""
    issues: list[ConfigIssue] = []
    profiles = data.get("compute_profiles")
    if not isinstance(profiles, dict):
        profiles = {}
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
        for section, why in stages.BACKEND_STAGES_NOT_YET.get(str(backend), {}).items():
            if data.get(section) is not None:
                issues.append(merged.issue((section,), f"compute profile {compute!r} uses backend {backend!r}, where {why}"))
    for section, why in stages.NOT_YET.items():
        if data.get(section) is not None:
            issues.append(
                merged.issue(
                    (section,),
                    f"the {section} stage is not available yet in rayops {__version__}: {why}; remove the section to load this pipeline",
                )
            )
    tracked = [s for s in stages.TRACKED if data.get(s) is not None]
    tracking = data.get("tracking")
    if not isinstance(tracking, dict):
        tracking = {}
    profile = profiles.get(compute) if isinstance(compute, str) else None
    if tracked and not tracking.get("conn_id") and isinstance(profile, dict) and profile.get("backend", "local") != "local":
        issues.append(
            merged.issue(
                ("tracking",),
                f"the {tracked[0]} stage on compute profile {compute!r} needs tracking.conn_id (a rayops_mlflow "
                "connection): the embedded MLflow store lives on this machine, out of the cluster's reach",
            )
        )
    task_issues = _task_issues(data, merged)
    told = {issue.key_path for issue in task_issues}  # a gate of the other kind is told once, as that
    issues += task_issues + [issue for issue in _gate_metric_issues(data, merged) if issue.key_path not in told]
    for section, needs in stages.REQUIRES.items():
        if data.get(section) is not None and data.get(needs) is None:
            issues.append(merged.issue((section,), f"the {section} stage needs a {needs} section"))
    monitor, deploy = data.get("monitor"), data.get("deploy")
    if isinstance(monitor, dict) and monitor.get("current") is None:
        if deploy is None:
            issues.append(
                merged.issue(
                    ("monitor",),
                    "monitor.current is needed without a deploy section: the default live data is the endpoint's inference log",
                )
            )
        elif isinstance(deploy, dict) and deploy.get("log_sample") == 0:
            issues.append(
                merged.issue(
                    ("deploy", "log_sample"),
                    "is 0, so the endpoint keeps no inference log for the monitor to "
                    "read; sample some rows or set monitor.current",
                )
            )
    return issues


def _task_issues(data: dict, merged: _Merged) -> list[ConfigIssue]:
    """Metrics, gates and tune.metric of one task kind: the first claim (train.task when set) decides."""
    claims = task_claims(data)
    if not claims:
        return []
    first_path, first, kind = claims[0]
    metrics = CLASSIFICATION_METRICS if kind == "classification" else REGRESSION_METRICS
    loop_metrics = [name for name, task in LOOP_METRIC_TASK.items() if task == kind]
    issues = []
    for path, what, claim in claims[1:]:
        if claim == kind:
            continue
        if what == "a per_class gate":
            fix = "a regression model has no classes to gate on; remove the gate"
        elif path == ("tune", "metric"):
            fix = f"search on what the loop reports for {kind} (val_loss, {', '.join(loop_metrics)})"
        else:
            fix = f"use {kind} metrics ({', '.join(metrics)})"
        if first_path != ("train", "task"):
            fix += " or set train.task"
        issues.append(merged.issue(path, f"{what} belongs to {claim}, but {first} makes this a {kind} pipeline; {fix}"))
    return issues


def _gate_metric_issues(data: dict, merged: _Merged) -> list[ConfigIssue]:
    """A gate can only judge a metric the evaluate stage computes."""
    evaluate = data.get("evaluate")
    if not isinstance(evaluate, dict) or not isinstance(evaluate.get("gates"), list):
        return []
    claims = task_claims(data)
    computed = evaluate.get("metrics") or DEFAULT_METRICS[claims[0][2] if claims else "classification"]
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
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        ):
            out.append(part)
            node = node[part]
        elif not isinstance(node, (dict, list)):
            break
        elif isinstance(node, dict) and isinstance(part, str) and part not in _UNION_TAGS:
            out.append(part)  # a missing or unknown key: still name it
            node = None
    return tuple(out)


_UNION_TAGS = {"local", "ray", "kuberay", "function-after", "function-before", "function-wrap", "tuple"}


class _PolicyRoot(BaseModel):
    """Where the security section sits, for locating its errors."""

    security: SecurityPolicy


def _model_at(path: KeyPath, data: Any, root: type[BaseModel] = PipelineSpec) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at `path`."""
    annotation: Any = root
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
        node = (
            node.get(part)
            if isinstance(node, dict)
            else (node[part] if isinstance(node, list) and isinstance(part, int) and part < len(node) else None)
        )
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
    ENV_NAME: "expected a variable name or a prefix ending in * (e.g. HF_*), never a bare *",
    _URI: "expected a URI starting with file:// or s3://",
    _NAME: "expected a name of lowercase letters, digits, '-' and '_', starting with a letter (at most 63)",
}


def _unknown_key_message(key: str, allowed: Mapping[str, Any]) -> str:
    hint = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    if hint:
        return f"unknown key {key!r}; did you mean {hint[0]!r}?"
    return f"unknown key {key!r}; expected one of: {', '.join(allowed)}"


def _issue_from_pydantic(err: Mapping[str, Any], data: Any, merged: _Merged, root: type[BaseModel] = PipelineSpec) -> ConfigIssue:
    loc = tuple(err["loc"])
    path = _yaml_path(loc, data)
    kind = err["type"]
    found = err.get("input")
    if kind == "extra_forbidden":
        model = _model_at(path[:-1], data, root)
        allowed = model.model_fields if model else {}
        return merged.issue(path, _unknown_key_message(str(path[-1]), allowed))
    if kind == "missing":
        model = _model_at(path[:-1], data, root)
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
    if merged.doc_of(path).expanded_from(path) and "found" in msg:
        msg = msg.split(", found", 1)[0]  # a validator quoted the value: it came from the environment
    show = "found" not in msg and not isinstance(found, (dict, list))
    return merged.issue(path, msg, found=found, show_found=show)


# --- a whole folder --------------------------------------------------------------------------


@dataclass(frozen=True)
class ConfigDirResult:
    """Every pipeline of a folder: those that loaded, and the errors of those that did not, by file."""

    pipelines: list[LoadedPipeline]
    errors: dict[str, ConfigError]


def pipeline_files(config_dir: Path) -> list[Path]:
    return sorted(p for p in config_dir.glob("*.y*ml") if p.suffix in (".yaml", ".yml") and p.name != DEFAULTS_FILE)


def load_config_dir(
    config_dir: Path, *, env: Mapping[str, str] | None = None, files: list[Path] | None = None
) -> ConfigDirResult:
    """Load every pipeline of a folder; one broken file never hides the others."""
    env = os.environ if env is None else env
    config_dir = Path(config_dir)
    project_dir = project_dir_of(config_dir)
    defaults = load_defaults(config_dir, env=env)
    loaded: list[LoadedPipeline] = []
    errors: dict[str, ConfigError] = {}
    for path in files if files is not None else pipeline_files(config_dir):
        try:
            loaded.append(load_pipeline(path, defaults=defaults, env=env, project_dir=project_dir))
        except ConfigError as exc:
            errors[str(path)] = exc
    return check_unique_names(loaded, errors)


def check_unique_names(loaded: list[LoadedPipeline], errors: dict[str, ConfigError]) -> ConfigDirResult:
    """Two files may not define the same pipeline: the later file (by name) is the error."""
    names: dict[str, str] = {}
    unique: list[LoadedPipeline] = []
    for pipeline in loaded:
        first = names.setdefault(pipeline.spec.pipeline, pipeline.file)
        if first != pipeline.file:
            doc = load_yaml(pipeline.source_text, file=pipeline.file)
            errors[pipeline.file] = ConfigError(
                [doc.issue(("pipeline",), f"pipeline name {pipeline.spec.pipeline!r} is already used by {first}")]
            )
            continue
        unique.append(pipeline)
    return ConfigDirResult(pipelines=unique, errors=errors)
