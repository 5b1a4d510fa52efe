"""Immutable, content-addressed snapshots: a folder of files that becomes visible complete.

A snapshot lives at `<root>/<content-hash>/` and holds its files plus `manifest.json`,
written last. The manifest is the commit point: a folder without one (a writer died
half-way) is absent to every reader, and the next writer of the same content simply
writes it again. Each file is written atomically, so no reader sees half a file either.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from airflow_provider_rayops.storage.hashing import content_hash
from airflow_provider_rayops.storage.ops import read_bytes, write_bytes
from airflow_provider_rayops.storage.settings import S3Settings
from airflow_provider_rayops.storage.uri import StorageError, StorageNotFoundError, join_uri

MANIFEST_NAME = "manifest.json"


def read_manifest(snapshot_uri: str, *, settings: S3Settings | None = None) -> dict[str, Any] | None:
    """The manifest of the snapshot at `snapshot_uri`, or None when there is no complete snapshot there."""
    uri = join_uri(snapshot_uri, MANIFEST_NAME)
    try:
        raw = read_bytes(uri, settings=settings)
    except StorageNotFoundError:
        return None
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        raise StorageError(uri, f"manifest is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise StorageError(uri, "manifest is not a JSON object")
    return manifest


def write_snapshot(
    snapshot_uri: str,
    *,
    files: Mapping[str, bytes],
    manifest: Mapping[str, Any],
    settings: S3Settings | None = None,
) -> dict[str, Any]:
    """Write `files` (name -> content) under `snapshot_uri`, then the manifest; returns the manifest written.

    The manifest written is `manifest` plus `files`: name -> {"bytes", "sha256"} of each file,
    so a reader can check what it loads.
    """
    if MANIFEST_NAME in files:
        raise StorageError(join_uri(snapshot_uri, MANIFEST_NAME), "the manifest is written by write_snapshot itself")
    listed: dict[str, dict[str, Any]] = {}
    for name, data in files.items():
        write_bytes(join_uri(snapshot_uri, name), data, settings=settings)
        listed[name] = {"bytes": len(data), "sha256": content_hash(data)}
    complete = {**manifest, "files": listed}
    body = json.dumps(complete, indent=2, sort_keys=True).encode() + b"\n"
    write_bytes(join_uri(snapshot_uri, MANIFEST_NAME), body, settings=settings)
    return complete
