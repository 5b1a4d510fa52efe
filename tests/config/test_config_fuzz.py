"""Property: whatever a pipeline file holds, it ends as a located ConfigError for that file alone
or as a valid pipeline whose strings reach jobs verbatim; never another exception, never code
run, never a secret shown, within a time bound, and the other pipelines still load.

Hypothesis mutates valid configs: wrong types, unknown keys, missing sections, deep nesting,
huge values, bad cron and durations, alias bombs, `!!python/*` and other explicit tags,
non-UTF-8 bytes, `{{ }}` / `{% %}` in string fields, `${VAR}` of every kind. Derandomized so CI
sees the same cases every run; RAYOPS_FUZZ_EXAMPLES runs more (e.g. 5000 before a release).
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_rayops.config.cache import load_config_dir_cached
from airflow_provider_rayops.config.errors import ConfigError
from airflow_provider_rayops.factory.dags import build_pipeline_dag
from tests.fixtures.templates import jinja_in_templated_fields

from .conftest import FUZZ_STATS, ROOT

EXAMPLES = int(os.environ.get("RAYOPS_FUZZ_EXAMPLES", "300"))
SECRET = "fernet-secret-value-7c1d"
ENV = {"AIRFLOW__CORE__FERNET_KEY": SECRET, "RAYOPS_DATA": "data", "RAYOPS_EPOCHS": "3", "HOME": "/root"}
CANARY = Path("/tmp/rayops-fuzz-canary")

BASES = [
    {"pipeline": "fuzz", "data": {"source": "file://data/churn.parquet", "target": "churned"}},
    {
        "pipeline": "fuzz",
        "description": "Churn",
        "schedule": "@daily",
        "tags": ["a", "b"],
        "retries": 2,
        "retry_delay": "30s",
        "timeouts": {"train": "2h"},
        "data": {"source": "file://data/churn.parquet", "target": "churned", "features": ["x", "y"],
                 "split": {"validation": 0.2, "seed": 7}, "min_rows": 10},
        "train": {"entrypoint": "rayops.builtin:tabular_mlp", "params": {"epochs": 2, "lr": 0.01, "hidden_sizes": [8]},
                  "checkpoint": {"every_epochs": 1, "keep": 2}, "max_failures": 1},
        "tune": {"metric": "val_auc", "mode": "max", "num_samples": 2,
                 "search_space": {"lr": {"loguniform": [0.0001, 0.01]}, "batch_size": {"choice": [64, 128]}}},
        "evaluate": {"metrics": ["accuracy", "auc"], "gates": [{"metric": "auc", "min": 0.5}, {"latency_p95_ms": 50}]},
        "promote": {"registered_model": "fuzz", "require_approval": True},
    },
]  # fmt: skip

EVIL_STRINGS = [
    "{{ lipsum.__globals__['os'].popen('touch /tmp/rayops-fuzz-canary').read() }}",
    "{{ conn.rayops_s3_default.password }}",
    "{% for x in range(3) %}{{ x }}{% endfor %}",
    "{# comment #}",
    "${AIRFLOW__CORE__FERNET_KEY}",
    "${AIRFLOW__CORE__FERNET_KEY:-fallback}",
    "${RAYOPS_DATA}",
    "${RAYOPS_UNSET}",
    "${RAYOPS_UNSET:-d}",
    "$${RAYOPS_DATA}",
    "${}",
    "${1BAD}",
    "* * * * * *",
    "every monday",
    "-5s",
    "0ms",
    "99999999999h",
    "file://../../../../etc/passwd",
    "file:///etc/shadow",
    "s3://other-bucket/x",
    "os:system",
    "this:s",
    "",
    "\x00",
    "é" * 3,
    "a" * 70_000,
]
VALUES = st.one_of(
    st.sampled_from(EVIL_STRINGS),
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, prefix + (key,))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _paths(item, prefix + (i,))


def _parent(doc, path):
    for part in path[:-1]:
        doc = doc[part]
    return doc


@st.composite
def mutated_configs(draw) -> bytes:
    doc = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = _parent(doc, path)
        action = draw(st.sampled_from(["jinja", "jinja", "replace", "delete", "unknown", "nest"]))
        if action == "jinja":  # a string field keeps its type: the config usually stays valid
            strings = [p for p in paths if isinstance(_parent(doc, p)[p[-1]], str)]
            if strings:
                where = draw(st.sampled_from(strings))
                _parent(doc, where)[where[-1]] = draw(st.sampled_from(EVIL_STRINGS[:4]))
        elif action == "replace":
            parent[path[-1]] = draw(VALUES)
        elif action == "delete":
            del parent[path[-1]]
        elif action == "unknown" and isinstance(parent, dict):
            parent[draw(st.sampled_from(["zz", "targt", "secrets", "security", "<<", "1"]))] = draw(VALUES)
        elif action == "nest":
            for _ in range(draw(st.integers(1, 40))):
                parent[path[-1]] = [parent[path[-1]]]
    text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False).encode()
    for _ in range(draw(st.integers(0, 2))):
        text = draw(_raw_mutation(text))
    return text


@st.composite
def _raw_mutation(draw, text: bytes) -> bytes:
    lines = text.split(b"\n")
    at = draw(st.integers(0, max(0, len(lines) - 1)))
    kind = draw(st.sampled_from(["tag", "bomb", "self_alias", "bytes", "truncate", "duplicate", "document"]))
    if kind == "tag":
        tag = draw(st.sampled_from([
            b"!!python/object/apply:os.system ['touch /tmp/rayops-fuzz-canary']", b"!!python/name:os.system",
            b"!!int abc", b"!!bool maybe", b"!!float xyz", b"!!binary aGk=", b"!!set {a: null}", b"!!timestamp x",
            b"!custom 1", b"!!str 5",
        ]))  # fmt: skip
        lines.insert(at, b"description: " + tag)
    elif kind == "bomb":
        bomb = [b"a0: &a0 [x,x,x,x,x,x,x,x,x]"] + [
            b"a%d: &a%d [" % (i, i) + b",".join([b"*a%d" % (i - 1)] * 9) + b"]" for i in range(1, 9)
        ]
        lines[at:at] = bomb
    elif kind == "self_alias":
        lines.insert(at, b"tags: &s [*s]")
    elif kind == "bytes":
        lines.insert(at, b"description: caf\xe9 \xff\xfe")
    elif kind == "truncate":
        return text[: draw(st.integers(0, len(text)))]
    elif kind == "duplicate" and lines:
        lines.insert(at, lines[at])
    elif kind == "document":
        lines.insert(at, b"---")
    return b"\n".join(lines)


@pytest.fixture(scope="module")
def counter():
    return FUZZ_STATS


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("fuzz") / "dag_configs"
    folder.mkdir()
    shutil.copy(ROOT / "dag_configs" / "defaults.yaml", folder)
    (folder / "good.yaml").write_text(yaml.safe_dump(BASES[1] | {"pipeline": "good"}))
    return folder


@settings(
    max_examples=EXAMPLES,
    deadline=2000,  # ms per case: the time bound (a case takes a few ms; the bomb took 15 s before)
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
@given(data=mutated_configs())
def test_any_config_ends_valid_or_as_its_own_located_error(data, project, counter, tmp_path_factory):
    CANARY.unlink(missing_ok=True)
    path = project / "fuzzed.yaml"
    path.write_bytes(data)
    counter["cases"] += 1
    result = load_config_dir_cached(project, cache_dir=tmp_path_factory.mktemp("cache"), env=ENV)
    assert "good" in [p.spec.pipeline for p in result.pipelines]  # the neighbour always loads
    error = result.errors.get(str(path))
    if error is not None:
        counter["errors"] += 1
        assert isinstance(error, ConfigError) and error.issues
        for issue in error.issues:
            assert issue.file in (str(path), str(project / "defaults.yaml")), issue
            assert issue.line >= 1 and issue.column >= 1 and issue.message
            assert "internal error" not in issue.message, issue
            assert SECRET not in str(issue), issue
    else:
        counter["valid"] += 1
        [loaded] = [p for p in result.pipelines if p.file == str(path)]
        dag = build_pipeline_dag(loaded)
        for task in dag.tasks:
            assert jinja_in_templated_fields(task) == [], task.task_id
        assert SECRET not in repr([t.__dict__ for t in dag.tasks]) + repr(dict(dag.params))
    assert not CANARY.exists(), "config text ran code"
