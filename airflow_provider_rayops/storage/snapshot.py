"""Immutable, content-addressed snapshots: a folder of files that becomes visible complete.

A snapshot lives at `<root>/<content-hash>/` and holds its files plus `manifest.json`,
written last. The manifest is the commit point: a folder without one (a writer died
half-way) is absent to every reader, and the next writer of the same content simply
writes it again. Each file is written atomically, so no reader sees half a file either.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from collections.abc import Mapping
from typing import IO, Any

from airflow_provider_rayops.storage.ops import open_write, read_bytes, write_bytes
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
    with SnapshotWriter(snapshot_uri, settings=settings) as writer:
        for name, data in files.items():
            with writer.open(name) as fh:
                fh.write(data)
        return writer.commit(manifest)


class SnapshotWriter:
    """Write a snapshot file by file, streaming, several at once; `commit` then writes the manifest.

    Each file is a `storage.open_write` stream: it lands (atomically) when it is closed, or when
    `commit` closes what is still open. Leaving the block without `commit`, or by an exception,
    discards every file still open, and no manifest is written.
    """

    def __init__(self, snapshot_uri: str, *, settings: S3Settings | None = None) -> None:
        self.snapshot_uri = snapshot_uri
        self.settings = settings
        self._open = contextlib.ExitStack()
        self._files: dict[str, _CountingWriter] = {}
        self._manifest: dict[str, Any] | None = None

    def __enter__(self) -> SnapshotWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is not None:
            self._open.__exit__(kind, exc, tb)  # each open file sees the error: discarded
        elif self._manifest is None:
            forgotten = StorageError(self.snapshot_uri, "snapshot left without commit(); its files are discarded")
            self._open.__exit__(type(forgotten), forgotten, None)
            raise forgotten

    def open(self, name: str) -> _CountingWriter:
        """A binary stream for the file `name`; close it (or use it as a context manager) to land it."""
        if name == MANIFEST_NAME:
            raise StorageError(join_uri(self.snapshot_uri, MANIFEST_NAME), "the manifest is written by commit() itself")
        if name in self._files:
            raise StorageError(join_uri(self.snapshot_uri, name), "already written in this snapshot")
        stream = contextlib.ExitStack()
        writer = _CountingWriter(stream.enter_context(open_write(join_uri(self.snapshot_uri, name), settings=self.settings)))
        writer.stream = stream
        self._open.push(stream)  # discarded with the snapshot unless landed first
        self._files[name] = writer
        return writer

    def commit(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Land every file still open, then write the manifest (`manifest` plus each file's bytes
        and sha256); returns the manifest written."""
        self._open.close()
        listed = {name: {"bytes": w.bytes_written, "sha256": w.sha256.hexdigest()} for name, w in self._files.items()}
        complete = {**manifest, "files": listed}
        body = json.dumps(complete, indent=2, sort_keys=True).encode() + b"\n"
        write_bytes(join_uri(self.snapshot_uri, MANIFEST_NAME), body, settings=self.settings)
        self._manifest = complete
        return complete


class _CountingWriter(io.RawIOBase):
    """A file being written into a snapshot: counts and hashes what passes; `close` lands it."""

    def __init__(self, handle: IO[bytes]) -> None:
        super().__init__()
        self._handle = handle
        self.stream = contextlib.ExitStack()
        self.bytes_written = 0
        self.sha256 = hashlib.sha256()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self._handle.write(view)
        self.sha256.update(view)
        self.bytes_written += len(view)
        return len(view)

    def tell(self) -> int:
        return self.bytes_written

    def close(self) -> None:
        if not self.closed:
            super().close()
            self.stream.close()  # open_write lands the file

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if exc is None:
            self.close()
        else:  # the file is discarded, as open_write does when its block raises
            super().close()
            self.stream.__exit__(kind, exc, tb)
