"""Safe YAML loading that remembers where every key came from.

Why not `yaml.safe_load`: it forgets line numbers, silently keeps the last of two
duplicate keys, and gives no place to expand `${VAR}`. We compose the node tree with
PyYAML's safe loader (no Python object tags can be constructed) and build plain values
ourselves, recording (line, column) for every key path.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import yaml

from airflow_provider_rayops.config.errors import ConfigIssue

try:  # libyaml's parser is several times faster; same safe semantics.
    _Loader = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml missing
    _Loader = yaml.SafeLoader

KeyPath = tuple[str | int, ...]

# ${NAME} or ${NAME:-default}; $${ is a literal "${".
_VAR = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

_PLAIN_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
    "tag:yaml.org,2002:timestamp",  # kept as the text written (a date stays "2024-01-01")
}


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class YamlDocument:
    """A parsed YAML file: its plain value and the position of every key path in it."""

    file: str
    value: Any
    positions: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    issues: list[ConfigIssue] = field(default_factory=list)

    def position(self, path: KeyPath) -> tuple[int, int]:
        """Position of the deepest known prefix of `path` (a missing key points at its parent)."""
        for end in range(len(path), -1, -1):
            pos = self.positions.get(tuple(path[:end]))
            if pos is not None:
                return pos
        return (1, 1)

    def issue(self, path: KeyPath, message: str) -> ConfigIssue:
        line, col = self.position(path)
        return ConfigIssue(self.file, line, col, format_path(path), message)


def load_yaml(text: str, *, file: str, env: Mapping[str, str] | None = None) -> YamlDocument:
    """Parse one YAML document; problems are collected in `.issues`, never raised."""
    env = os.environ if env is None else env
    doc = YamlDocument(file=file, value=None)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        doc.issues.append(ConfigIssue(file, line, col, "", f"not valid YAML: {exc.problem or exc}"))
        return doc
    except yaml.YAMLError as exc:
        doc.issues.append(ConfigIssue(file, 1, 1, "", f"not valid YAML: {exc}"))
        return doc
    finally:
        loader.dispose()
    if node is None:
        doc.value = {}
        return doc
    doc.value = _build(node, (), doc, env)
    return doc


def _mark(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


def _build(node: yaml.Node, path: KeyPath, doc: YamlDocument, env: Mapping[str, str]) -> Any:
    doc.positions.setdefault(path, _mark(node))
    if node.tag not in _PLAIN_TAGS:
        doc.issues.append(
            doc.issue(path, f"YAML tag {node.tag!r} is not allowed: pipeline configs hold plain values only")
        )
        return None
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                doc.issues.append(doc.issue(path, "YAML merge keys (<<) are not supported; use defaults.yaml for shared values"))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                doc.issues.append(doc.issue(path, "mapping keys must be plain strings"))
                continue
            key = str(key_node.value)
            key_path = path + (key,)
            if key in out:
                first = doc.positions[key_path]
                doc.positions[key_path] = _mark(key_node)
                doc.issues.append(doc.issue(key_path, f"duplicate key (first defined at line {first[0]})"))
                continue
            doc.positions[key_path] = _mark(key_node)
            out[key] = _build(value_node, key_path, doc, env)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            doc.positions[path + (i,)] = _mark(item)
            items.append(_build(item, path + (i,), doc, env))
        return items
    value = _scalar(node)
    if isinstance(value, str) and "$" in value:
        value = _expand(value, path, doc, env)
    return value


_CONSTRUCTOR = yaml.constructor.SafeConstructor()


def _scalar(node: yaml.ScalarNode) -> Any:
    if node.tag == "tag:yaml.org,2002:timestamp":
        return node.value
    return _CONSTRUCTOR.construct_object(node)


def _expand(value: str, path: KeyPath, doc: YamlDocument, env: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        if name in env:
            return env[name]
        if default is not None:
            return default
        doc.issues.append(
            doc.issue(path, f"environment variable {name} is not set (write ${{{name}:-default}} to give a default)")
        )
        return ""

    return _VAR.sub(replace, value)
