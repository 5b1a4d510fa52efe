"""Safe, bounded YAML loading that remembers where every key came from.

Why not `yaml.safe_load`: it forgets line numbers, silently keeps the last of two
duplicate keys, expands aliases without limit (a 600-byte "billion laughs" file takes
minutes and gigabytes), recurses into a self-referencing alias, and raises bare
exceptions for `!!int abc`. Pipeline files are written by many people and parsed by the
dag-processor for every pipeline at once, so one file must never hang it or take the
others down. Here libyaml's parser turns the text into events and we build plain values
from them ourselves, iteratively, within fixed bounds, recording (line, column) for every
key path. Every problem becomes a located `ConfigIssue`; nothing is ever raised.

Bounds: files up to `MAX_FILE_BYTES`, scalars up to `MAX_SCALAR_CHARS`, nesting up to
`MAX_DEPTH`, at most `MAX_ALIASES` aliases and `MAX_VALUES` values once aliases are
expanded, integers within 64 bits, finite floats. Only plain tags (str, int, float, bool,
null, map, seq, timestamp) are accepted: no Python objects, no binary, no sets.

`${VAR}` expansion is a separate step (`expand_variables`) because what may be expanded
is decided by the platform's policy in defaults.yaml (config/policy.py).
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from airflow_provider_rayops.config.errors import ConfigError, ConfigIssue

_Parser: type[yaml.CSafeLoader] | type[yaml.SafeLoader]
try:  # libyaml's parser is several times faster; same safe semantics.
    _Parser = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - libyaml missing
    _Parser = yaml.SafeLoader

KeyPath = tuple[str | int, ...]

MAX_FILE_BYTES = 1 << 20
MAX_SCALAR_CHARS = 64 * 1024
MAX_DEPTH = 32
MAX_ALIASES = 64
MAX_VALUES = 100_000
_MAX_INT = 2**63 - 1
_MAX_INT_CHARS = 40  # longer integer text is refused before Python parses it

_YAML_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {f"{_YAML_TAG}{t}" for t in ("str", "int", "float", "bool", "null", "timestamp")}
_MAP_TAGS = {None, "!", f"{_YAML_TAG}map"}
_SEQ_TAGS = {None, "!", f"{_YAML_TAG}seq"}
_TYPE_NAMES = {"int": "an integer", "float": "a number", "bool": "true or false", "null": "null"}

_RESOLVER = yaml.resolver.Resolver()
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


def format_path(path: KeyPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def short_tag(tag: str) -> str:
    return "!!" + tag[len(_YAML_TAG) :] if tag.startswith(_YAML_TAG) else tag


@dataclass
class YamlDocument:
    """A parsed YAML file: its plain value and the position of every key path in it.

    `value` is None when the file could not be read as YAML at all (see `issues`).
    `expanded` records the paths whose text came from `${VAR}` expansion: the variable names
    used and the resulting text, so error messages can say where a value came from without
    showing it.
    """

    file: str
    value: Any
    positions: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    issues: list[ConfigIssue] = field(default_factory=list)
    expanded: dict[KeyPath, tuple[list[str], str]] = field(default_factory=dict)
    empty: bool = False  # nothing but blank lines and comments
    refused: set[KeyPath] = field(default_factory=set)  # values dropped with an issue already (not reported twice)

    def position(self, path: KeyPath) -> tuple[int, int]:
        """Position of the deepest known prefix of `path` (a missing key points at its parent)."""
        depth = self.known_depth(path)
        return self.positions[tuple(path[:depth])] if depth >= 0 else (1, 1)

    def known_depth(self, path: KeyPath) -> int:
        """Length of the longest prefix of `path` this document has a position for (-1: none)."""
        for end in range(len(path), -1, -1):
            if tuple(path[:end]) in self.positions:
                return end
        return -1

    def issue(self, path: KeyPath, message: str) -> ConfigIssue:
        line, col = self.position(path)
        return ConfigIssue(self.file, line, col, format_path(path), message)

    def scrub(self, issue: ConfigIssue) -> ConfigIssue:
        """The issue with every value that came from the environment replaced by its ${NAME}."""
        message = issue.message
        for path, (used, value) in self.expanded.items():
            if len(value) >= 3 or issue.key_path == format_path(path):
                names = "".join("${" + n + "}" for n in used)
                message = message.replace(repr(value), names).replace(value, names) if value else message
        if message == issue.message:
            return issue
        return ConfigIssue(issue.file, issue.line, issue.column, issue.key_path, message)

    def was_refused(self, path: KeyPath) -> bool:
        """Whether the value at `path` (or one containing it) was dropped with an issue of its own."""
        return any(tuple(path[:end]) in self.refused for end in range(len(path) + 1))

    def expanded_from(self, path: KeyPath) -> list[str] | None:
        """The ${VAR} names whose values make up the value at `path` or anything inside it."""
        names = [n for p, (used, _) in self.expanded.items() if p[: len(path)] == tuple(path) for n in used]
        return names or None


def read_config_text(path: Path) -> str:
    """A config file's text; ConfigError (located) when it is too big or not UTF-8."""
    file = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(
                [ConfigIssue(file, 1, 1, "", f"file is {size:,} bytes; pipeline configs are limited to {MAX_FILE_BYTES:,} bytes")]
            )
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError([ConfigIssue(file, 1, 1, "", f"cannot read the file: {exc.strerror or exc}")]) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ConfigError(
            [
                ConfigIssue(
                    file, line, column, "", f"not UTF-8: byte 0x{data[exc.start]:02x} cannot be decoded; save the file as UTF-8"
                )
            ]
        ) from None


class _Abort(Exception):
    """A problem after which the rest of the file cannot be trusted (bounds, broken aliases)."""


@dataclass
class _Frame:
    container: dict | list
    path: KeyPath
    start: tuple[int, int]
    anchor: str | None
    values_at_start: int
    refused: bool = False  # a tag that is not allowed: the collection becomes None
    key: str | None = None  # a mapping's key waiting for its value
    bad_key: bool = False  # the key was not a plain string: drop the value that follows


def _mark(event: yaml.Event) -> tuple[int, int]:
    mark = event.start_mark
    assert mark is not None  # the parser marks every event it emits
    return (mark.line + 1, mark.column + 1)


class _Builder:
    """Builds plain values from libyaml events with an explicit stack (no recursion)."""

    def __init__(self, doc: YamlDocument) -> None:
        self.doc = doc
        self.stack: list[_Frame] = []
        self.anchors: dict[str, tuple[Any, int]] = {}  # anchor -> (value, values inside)
        self.open_anchors: set[str] = set()
        self.aliases = 0
        self.values = 0
        self.root: Any = None
        self.documents = 0

    # -- issues ------------------------------------------------------------------------------

    def issue(self, at: tuple[int, int], path: KeyPath, message: str) -> None:
        self.doc.issues.append(ConfigIssue(self.doc.file, at[0], at[1], format_path(path), message))

    def abort(self, at: tuple[int, int], path: KeyPath, message: str) -> None:
        self.issue(at, path, message)
        raise _Abort

    # -- where the next value goes -----------------------------------------------------------

    def next_path(self) -> KeyPath | None:
        """Path of the value about to be built; None when it is a mapping key."""
        if not self.stack:
            return ()
        top = self.stack[-1]
        if isinstance(top.container, list):
            return top.path + (len(top.container),)
        if top.key is None and not top.bad_key:
            return None
        return top.path + (top.key if top.key is not None else "?",)

    def count(self, n: int, at: tuple[int, int], path: KeyPath) -> None:
        self.values += n
        if self.values > MAX_VALUES:
            self.abort(at, path, f"the file expands to more than {MAX_VALUES:,} values (aliases included); refusing to load it")

    def attach(self, value: Any, at: tuple[int, int], path: KeyPath) -> None:
        if not self.stack:
            self.root = value
            return
        top = self.stack[-1]
        if isinstance(top.container, list):
            top.container.append(value)
            return
        if top.bad_key:
            top.bad_key = False
            return
        assert top.key is not None
        top.container[top.key] = value
        top.key = None

    def key_position_problem(self, at: tuple[int, int], what: str) -> None:
        top = self.stack[-1]
        self.issue(at, top.path, f"mapping keys must be plain strings, found {what}")
        top.bad_key = True

    # -- events ------------------------------------------------------------------------------

    def feed(self, event: yaml.Event) -> None:
        if isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                self.abort(_mark(event), (), "a pipeline file holds one YAML document; found a second one ('---')")
        elif isinstance(event, yaml.ScalarEvent):
            self.scalar(event)
        elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            self.start(event)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            self.end()
        elif isinstance(event, yaml.AliasEvent):
            self.alias(event)

    def start(self, event: yaml.MappingStartEvent | yaml.SequenceStartEvent) -> None:
        at = _mark(event)
        is_map = isinstance(event, yaml.MappingStartEvent)
        path = self.next_path()
        if path is None:
            self.key_position_problem(at, "a mapping" if is_map else "a list")
            path = self.stack[-1].path + ("?",)
        if len(self.stack) >= MAX_DEPTH:
            self.abort(at, path, f"nested more than {MAX_DEPTH} levels deep")
        self.doc.positions.setdefault(path, at)
        allowed = _MAP_TAGS if is_map else _SEQ_TAGS
        refused = event.tag not in allowed
        if refused:
            assert event.tag is not None  # None is an allowed tag
            self.doc.refused.add(path)
            self.issue(at, path, f"YAML tag {short_tag(event.tag)!r} is not allowed: pipeline configs hold plain values only")
        self.count(1, at, path)
        if event.anchor is not None:
            self.open_anchors.add(event.anchor)
        self.stack.append(_Frame({} if is_map else [], path, at, event.anchor, self.values, refused=refused))

    def end(self) -> None:
        frame = self.stack.pop()
        value: Any = None if frame.refused else frame.container
        if frame.anchor is not None:
            self.open_anchors.discard(frame.anchor)
            self.anchors[frame.anchor] = (value, self.values - frame.values_at_start + 1)
        self.attach(value, frame.start, frame.path)

    def alias(self, event: yaml.AliasEvent) -> None:
        at = _mark(event)
        path = self.next_path()
        if path is None:
            self.key_position_problem(at, f"the alias *{event.anchor}")
            return
        name = event.anchor
        assert name is not None  # an alias always names its anchor (*name)
        if name in self.open_anchors:
            self.abort(at, path, f"alias *{name} refers to the value that contains it (a cycle)")
        if name not in self.anchors:
            self.abort(at, path, f"alias *{name} is not defined above (write &{name} on a value before using *{name})")
        self.aliases += 1
        if self.aliases > MAX_ALIASES:
            self.abort(at, path, f"more than {MAX_ALIASES} aliases (*name); pipeline configs may use only a few")
        value, size = self.anchors[name]
        self.count(size, at, path)
        self.doc.positions.setdefault(path, at)
        self.attach(copy.deepcopy(value), at, path)

    def scalar(self, event: yaml.ScalarEvent) -> None:
        at = _mark(event)
        path = self.next_path()
        text = event.value
        if len(text) > MAX_SCALAR_CHARS:
            self.abort(at, path or (), f"a value of {len(text):,} characters; the limit is {MAX_SCALAR_CHARS:,}")
        if path is None:  # a mapping key
            top = self.stack[-1]
            if event.tag not in (None, "!", f"{_YAML_TAG}str") or (text == "<<" and event.implicit[0]):
                if text == "<<" and event.implicit[0]:
                    self.issue(at, top.path, "YAML merge keys (<<) are not supported; use defaults.yaml for shared values")
                else:
                    assert event.tag is not None  # only a tag other than None, "!" or !!str gets here
                    self.issue(at, top.path, f"mapping keys must be plain strings, found tag {short_tag(event.tag)!r}")
                top.bad_key = True
                return
            key_path = top.path + (text,)
            if text in top.container:
                first = self.doc.positions[key_path]
                self.doc.positions[key_path] = at
                self.issue(at, key_path, f"duplicate key (first defined at line {first[0]})")
                top.bad_key = True
                return
            self.doc.positions[key_path] = at
            top.key = text
            return
        self.doc.positions.setdefault(path, at)
        self.count(1, at, path)
        issues = len(self.doc.issues)
        value = self.construct(event, at, path)
        if len(self.doc.issues) > issues:
            self.doc.refused.add(path)
        if event.anchor is not None:
            self.anchors[event.anchor] = (value, 1)
        self.attach(value, at, path)

    def construct(self, event: yaml.ScalarEvent, at: tuple[int, int], path: KeyPath) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            tag = _RESOLVER.resolve(yaml.ScalarNode, event.value, event.implicit)
        if tag not in _SCALAR_TAGS:
            self.issue(at, path, f"YAML tag {short_tag(tag)!r} is not allowed: pipeline configs hold plain values only")
            return None
        kind = tag[len(_YAML_TAG) :]
        text = event.value
        if kind in ("str", "timestamp"):  # a timestamp stays the text written ("2024-01-01")
            return text
        if kind == "int" and len(text) > _MAX_INT_CHARS:
            self.issue(at, path, f"integer of {len(text)} characters is too large (limit: 64-bit integers)")
            return None
        try:
            # libyaml's events carry yaml._yaml.Mark, which the stubs' ScalarNode does not accept (the
            # constructor only puts the marks in its error messages).
            node = yaml.ScalarNode(tag, text, event.start_mark, event.end_mark)  # type: ignore[arg-type]
            value = _CONSTRUCTOR.construct_object(node)
        except (ValueError, KeyError, TypeError, OverflowError, yaml.YAMLError):
            self.issue(at, path, f"{short_tag(tag)} expects {_TYPE_NAMES.get(kind, kind)}, found {text!r}")
            return None
        if kind == "int" and abs(value) > _MAX_INT:
            self.issue(at, path, f"integer {text} is too large (limit: 64-bit integers)")
            return None
        if kind == "float" and not math.isfinite(value):
            self.issue(at, path, f"{text!r} is not a finite number; configs travel as JSON, which has no inf or nan")
            return None
        return value


def load_yaml(text: str, *, file: str) -> YamlDocument:
    """Parse one YAML document within the bounds above; problems are collected in `.issues`, never raised."""
    doc = YamlDocument(file=file, value=None)
    if len(text) > MAX_FILE_BYTES:
        doc.issues.append(
            ConfigIssue(
                file, 1, 1, "", f"file has {len(text):,} characters; pipeline configs are limited to {MAX_FILE_BYTES:,} bytes"
            )
        )
        return doc
    builder = _Builder(doc)
    parser = _Parser(text)
    try:
        while parser.check_event():
            event = parser.get_event()
            assert event is not None  # check_event() just said one is waiting
            builder.feed(event)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        doc.issues.append(ConfigIssue(file, line, col, "", f"not valid YAML: {exc.problem or exc}"))
        return doc
    except yaml.YAMLError as exc:
        doc.issues.append(ConfigIssue(file, 1, 1, "", f"not valid YAML: {exc}"))
        return doc
    except _Abort:
        return doc
    finally:
        parser.dispose()
    doc.value = builder.root
    doc.empty = builder.root is None and not any(
        line.strip() and not line.lstrip().startswith("#") and line.strip() not in ("---", "...") for line in text.splitlines()
    )
    doc.positions.setdefault((), (1, 1))
    return doc


# -- ${VAR} expansion ----------------------------------------------------------------------------

# ${NAME} or ${NAME:-default}; $${ is a literal "${".
VARIABLE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def variable_names(text: str) -> set[str]:
    """The ${NAME}s a text references (a cheap scan; used for cache keys)."""
    return {m.group(1) for m in VARIABLE.finditer(text) if m.group(1)}


def expand_variables(doc: YamlDocument, env: Any, allowed: Any, *, skip: tuple[str, ...] = ()) -> None:
    """Expand `${NAME}` / `${NAME:-default}` in every string of `doc.value`, in place.

    `allowed(name) -> str | None` returns None for a name that may be expanded, else the
    reason it may not (the platform's allowlist). A refused or unset name is a located
    issue; its value is never read. Top-level keys in `skip` are left as written.
    """
    if not isinstance(doc.value, (dict, list)):
        return
    stack: list[tuple[Any, Any, KeyPath]] = []
    items = doc.value.items() if isinstance(doc.value, dict) else enumerate(doc.value)
    stack += [(doc.value, k, (k,)) for k, _ in items if k not in skip]
    while stack:
        parent, key, path = stack.pop()
        value = parent[key]
        if isinstance(value, dict):
            stack += [(value, k, path + (k,)) for k in value]
        elif isinstance(value, list):
            stack += [(value, i, path + (i,)) for i in range(len(value))]
        elif isinstance(value, str) and "${" in value:
            parent[key] = _expand(value, path, doc, env, allowed)


def _expand(value: str, path: KeyPath, doc: YamlDocument, env: Any, allowed: Any) -> str:
    used: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        refused = allowed(name)
        if refused is not None:
            doc.issues.append(doc.issue(path, f"${{{name}}} cannot be expanded: {refused}"))
            return ""
        used.append(name)
        if name in env:
            return env[name]
        if default is not None:
            return default
        doc.issues.append(
            doc.issue(path, f"environment variable {name} is not set (write ${{{name}:-default}} to give a default)")
        )
        return ""

    issues = len(doc.issues)
    out = VARIABLE.sub(replace, value)
    if len(doc.issues) > issues:
        doc.refused.add(path)  # what is left is not the value the author meant: judged no further
    if used:
        doc.expanded[path] = (used, out)
    return out
