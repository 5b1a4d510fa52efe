"""Storage URIs: what `file://` and `s3://` mean to rayops, and the errors they raise.

- `s3://bucket/key`: an object (or, for listing, a folder) in a bucket. The endpoint and
  credentials never come from the URI: they come from `S3Settings`.
- `file:///abs/path`: an absolute local path.
- `file://rel/path` (as pipeline YAML writes it, e.g. `file://data/churn.parquet`): a path
  relative to a base folder. `resolve_uri(uri, base_dir=...)` makes it absolute; every
  other function resolves it against the current directory. A Ray job runs in a copy of
  its working_dir, so whoever submits a job resolves its URIs first (against the folder of
  the pipeline config) and hands the job absolute ones.

Paths and keys are taken literally: no percent-decoding, no `localhost` host.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal

SCHEMES = ("file", "s3")
EXPECTED_FORM = "file:///absolute/path, file://relative/path or s3://bucket/key"

# S3 bucket naming rules (the subset MinIO and AWS agree on).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class StorageError(Exception):
    """A storage operation failed; `uri` names the object or folder it was about."""

    def __init__(self, uri: str, problem: str) -> None:
        self.uri = uri
        self.problem = problem
        super().__init__(f"{uri}: {problem}")


class InvalidURIError(StorageError, ValueError):
    """A URI rayops cannot address: unknown scheme, missing bucket, malformed path."""

    def __init__(self, uri: str, problem: str) -> None:
        self.expected = EXPECTED_FORM
        super().__init__(uri, f"{problem}; expected {EXPECTED_FORM}")


class StorageNotFoundError(StorageError, FileNotFoundError):
    """The object, file or bucket a read needed does not exist."""


class StorageConfigError(StorageError, ValueError):
    """Storage settings that cannot work (e.g. an endpoint URL with a path); never holds secrets."""


@dataclass(frozen=True)
class StorageURI:
    """A parsed URI. For `file`, `path` is absolute and `bucket` is empty; for `s3`, `path` is the key."""

    scheme: Literal["file", "s3"]
    bucket: str
    path: str

    def __str__(self) -> str:
        if self.scheme == "file":
            return f"file://{self.path}"
        return f"s3://{self.bucket}/{self.path}" if self.path else f"s3://{self.bucket}"


def parse_uri(uri: str, *, base_dir: str | os.PathLike[str] | None = None) -> StorageURI:
    """Parse `uri`; a relative `file://` path resolves against `base_dir` (default: the current directory)."""
    if not isinstance(uri, str) or "://" not in uri:
        raise InvalidURIError(str(uri), "not a URI")
    scheme, _, rest = uri.partition("://")
    if scheme not in SCHEMES:
        raise InvalidURIError(uri, f"unknown scheme {scheme!r}")
    if scheme == "file":
        if not rest or "\x00" in rest:
            raise InvalidURIError(uri, "missing path")
        path = rest if rest.startswith("/") else os.path.join(os.fspath(base_dir or os.getcwd()), rest)
        normalized = os.path.normpath(path)
        if rest.endswith("/") and normalized != "/":
            normalized += "/"
        return StorageURI("file", "", normalized)
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise InvalidURIError(uri, "missing bucket")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise InvalidURIError(uri, f"invalid bucket name {bucket!r} (3-63 lowercase letters, digits, '.', '-')")
    if "//" in key or any(part in (".", "..") for part in key.split("/")):
        raise InvalidURIError(uri, "key has an empty, '.' or '..' segment")
    return StorageURI("s3", bucket, key)


def resolve_uri(uri: str, *, base_dir: str | os.PathLike[str] | None = None) -> str:
    """The absolute form of `uri` (relative `file://` paths resolved against `base_dir` or the cwd).

    Raises InvalidURIError for anything but `file://` and `s3://bucket/...`.
    """
    return str(parse_uri(uri, base_dir=base_dir))


def is_within(uri: str, root: str) -> bool:
    """Whether `uri` names `root` itself or something under it (by whole path segments).

    Both must be absolute. `file://` paths are compared after resolving symlinks and `..`,
    so a link out of the root does not count as inside it.
    """
    try:
        target, base = parse_uri(uri), parse_uri(root)
    except InvalidURIError:
        return False
    if target.scheme != base.scheme:
        return False
    if target.scheme == "file":
        target_path = os.path.realpath(target.path)
        base_path = os.path.realpath(base.path)
        return target_path == base_path or target_path.startswith(base_path.rstrip("/") + "/")
    if target.bucket != base.bucket:
        return False
    prefix = base.path.strip("/")
    key = target.path.strip("/")
    return not prefix or key == prefix or key.startswith(prefix + "/")


def join_uri(base: str, *parts: str) -> str:
    """`base` with path segments appended: `join_uri("s3://b/snaps", "abc", "train.parquet")`."""
    joined = base
    while joined.endswith("/") and not joined.endswith("://"):
        joined = joined[:-1]
    for part in parts:
        part = part.strip("/")
        if part:
            joined = f"{joined}/{part}"
    return joined
