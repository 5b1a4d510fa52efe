"""A pipeline file written to hurt: each ends as a located error for that file alone, fast.

Every case here hung, crashed or took the other pipelines down before the loader built values
from libyaml events within fixed bounds (config/yaml_source.py).
"""

from __future__ import annotations

import re
import resource
import time

import pytest

from airflow_provider_rayops.config.cache import load_config_dir_cached
from airflow_provider_rayops.config.errors import ConfigError
from airflow_provider_rayops.config.loader import load_defaults, load_pipeline
from airflow_provider_rayops.config.yaml_source import MAX_ALIASES, MAX_FILE_BYTES

from .conftest import MINIMAL

GOOD = MINIMAL.replace("churn", "good")


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """'Billion laughs': each level lists the previous one `width` times (654 bytes, 9**9 values)."""
    lines = ["a0: &a0 [" + ",".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * width) + "]")
    return "pipeline: bomb\n" + "\n".join(lines) + "\n"


HOSTILE: dict[str, tuple[bytes, str]] = {
    # case: (file bytes, the start of the one error expected, after "<file>:")
    "alias bomb": (alias_bomb().encode(), "7:10: a5[0]: the file expands to more than 100,000 values"),
    "self-referencing alias": (b"pipeline: x\ndata: &a [*a]\n", "2:11: data[0]: alias *a refers to the value that contains it"),
    "undefined alias": (b"pipeline: x\ndata: *nope\n", "2:7: data: alias *nope is not defined above"),
    "not UTF-8": (b"pipeline: x\ndata:\n  source: file://d\xff.csv\n", "3:19: not UTF-8: byte 0xff cannot be decoded"),
    "!!int abc": (b"pipeline: x\nretries: !!int abc\n", "2:10: retries: !!int expects an integer, found 'abc'"),
    "!!bool maybe": (b"pipeline: x\ntags: [!!bool maybe]\n", "2:8: tags[0]: !!bool expects true or false, found 'maybe'"),
    "!!float xyz": (b"pipeline: x\ntags: [!!float xyz]\n", "2:8: tags[0]: !!float expects a number, found 'xyz'"),
    "5,000-digit integer": (
        b"pipeline: x\nretries: " + b"9" * 5000 + b"\n",
        "2:10: retries: integer of 5000 characters is too large",
    ),
    "infinite float": (
        b"pipeline: x\ndata: {split: {validation: .inf}}\n",
        "2:28: data.split.validation: '.inf' is not a finite number",
    ),
    "python object": (
        b"pipeline: !!python/object/apply:os.system [id]\n",
        "1:11: pipeline: YAML tag '!!python/object/apply:os.system' is not allowed",
    ),
    "python name on a mapping": (
        b"pipeline: x\ndata: !!python/name:os.system {}\n",
        "2:7: data: YAML tag '!!python/name:os.system' is not allowed",
    ),
    "binary": (b"pipeline: !!binary aGk=\n", "1:11: pipeline: YAML tag '!!binary' is not allowed"),
    "set": (b"pipeline: x\ntags: !!set {a, b}\n", "2:7: tags: YAML tag '!!set' is not allowed"),
    "deep nesting": (b"pipeline: x\ntags: " + b"[" * 40 + b"]" * 40 + b"\n", "2:38: tags"),
    "two documents": (b"pipeline: x\n---\npipeline: y\n", "2:1: a pipeline file holds one YAML document"),
    "complex key": (b"pipeline: x\n? [a, b]\n: 1\n", "2:3: mapping keys must be plain strings, found a list"),
    "huge scalar": (b"pipeline: x\ndescription: " + b"a" * 70_000 + b"\n", "2:14: description: a value of 70,000 characters"),
    "too many aliases": (
        b"pipeline: x\nv: &v 1\ntags: [" + b",".join([b"*v"] * (MAX_ALIASES + 1)) + b"]\n",
        f"3:{7 + 3 * MAX_ALIASES + 1}: tags[{MAX_ALIASES}]: more than {MAX_ALIASES} aliases",
    ),
    "empty file": (b"", "1:1: the file is empty; a pipeline needs at least `pipeline:` and `data:`"),
    "comments only": (b"# nothing yet\n", "1:1: the file is empty; a pipeline needs at least `pipeline:` and `data:`"),
    "a bare scalar": (b"hello\n", "1:1: a pipeline file must be a mapping"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_file_is_one_located_error_within_bounded_work(config_dir, case):
    """Bounded in CPU time, not wall time: a loaded machine slows the clock, not the work (before
    the bounds, the alias bomb ran 30 s of CPU and 3 GB before it was killed)."""
    data, expected = HOSTILE[case]
    path = config_dir / "p.yaml"
    path.write_bytes(data)
    defaults = load_defaults(config_dir, env={})
    start = time.process_time()
    with pytest.raises(ConfigError, match=re.escape(str(path))) as info:
        load_pipeline(path, defaults=defaults, env={})
    cpu_s = time.process_time() - start
    messages = [str(i) for i in info.value.issues]
    assert any(m.startswith(f"{path}:{expected}") for m in messages), messages
    assert all(i.file == str(path) for i in info.value.issues), messages  # never defaults.yaml
    assert cpu_s < 2.0, f"{case}: {cpu_s:.2f} CPU s"


def test_alias_bomb_stays_within_bounded_memory(config_dir):
    path = config_dir / "bomb.yaml"
    path.write_text(alias_bomb())
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ConfigError, match="expands to more than 100,000 values"):
        load_pipeline(path, defaults=load_defaults(config_dir, env={}), env={})
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 100, f"peak memory grew {grown_mb:.0f} MB"


def test_file_over_the_size_limit_is_refused_unread(config_dir):
    path = config_dir / "big.yaml"
    path.write_bytes(b"# " + b"x" * MAX_FILE_BYTES + b"\n")
    with pytest.raises(
        ConfigError, match=rf"{path}:1:1: file is 1,048,579 bytes; pipeline configs are limited to 1,048,576 bytes"
    ):
        load_pipeline(path, defaults=load_defaults(config_dir, env={}), env={})


def test_empty_pipeline_file_names_the_file_the_user_wrote_not_defaults(config_dir):
    path = config_dir / "empty.yaml"
    path.write_text("")
    with pytest.raises(ConfigError) as info:
        load_pipeline(path, defaults=load_defaults(config_dir, env={}), env={})
    assert [str(i) for i in info.value.issues] == [
        f"{path}:1:1: the file is empty; a pipeline needs at least `pipeline:` and `data:`"
    ]


def test_missing_keys_of_a_short_file_point_at_that_file(write):
    path = write("p.yaml", "description: nothing else\n")
    with pytest.raises(ConfigError) as info:
        load_pipeline(path, defaults=load_defaults(path.parent, env={}), env={})
    assert [i.file for i in info.value.issues] == [str(path), str(path)]
    assert [i.key_path for i in info.value.issues] == ["data", "pipeline"]


@pytest.mark.parametrize("case", ["alias bomb", "self-referencing alias", "not UTF-8", "5,000-digit integer", "!!bool maybe"])
def test_hostile_file_beside_good_ones_takes_only_itself_down(config_dir, tmp_path, case):
    (config_dir / "good.yaml").write_text(GOOD)
    (config_dir / "hostile.yaml").write_bytes(HOSTILE[case][0])
    (config_dir / "zz_good.yaml").write_text(GOOD.replace("good", "other"))
    result = load_config_dir_cached(config_dir, cache_dir=tmp_path / "cache", env={})
    assert [p.spec.pipeline for p in result.pipelines] == ["good", "other"]
    assert list(result.errors) == [str(config_dir / "hostile.yaml")]


def test_anchors_and_a_few_aliases_still_work(write):
    path = write("p.yaml", MINIMAL + "tags: [&x nightly, *x]\ndescription: &d shared\nowner: *d\n")
    loaded = load_pipeline(path, defaults=load_defaults(path.parent, env={}), env={})
    assert loaded.spec.tags == ["nightly", "nightly"]
    assert loaded.spec.owner == "shared"
