"""Snapshots become visible complete: the manifest is written last and is the commit point."""

from __future__ import annotations

import json

import pytest

from airflow_provider_rayops import storage
from airflow_provider_rayops.storage import MANIFEST_NAME, StorageError, join_uri, read_manifest, write_snapshot
from airflow_provider_rayops.storage import snapshot as snapshot_module


def test_snapshot_files_and_manifest_are_written(storage_root: str) -> None:
    snap = join_uri(storage_root, "abc123")
    written = write_snapshot(snap, files={"train.parquet": b"TT", "validation.parquet": b"V"}, manifest={"seed": 7})
    assert storage.list_uris(snap) == [
        join_uri(snap, MANIFEST_NAME),
        join_uri(snap, "train.parquet"),
        join_uri(snap, "validation.parquet"),
    ]
    assert read_manifest(snap) == written
    assert written["seed"] == 7
    assert written["files"]["train.parquet"] == {"bytes": 2, "sha256": storage.content_hash(b"TT")}


def test_folder_without_manifest_is_no_snapshot(storage_root: str) -> None:
    snap = join_uri(storage_root, "half")
    storage.write_bytes(join_uri(snap, "train.parquet"), b"TT")
    assert read_manifest(snap) is None


def test_writer_dying_between_files_leaves_no_manifest(storage_root: str, monkeypatch) -> None:
    snap = join_uri(storage_root, "dies")
    real_open_write = snapshot_module.open_write
    calls = []

    def dying_open_write(uri: str, **kwargs):
        calls.append(uri)
        if len(calls) == 2:
            raise OSError("disk gone")
        return real_open_write(uri, **kwargs)

    monkeypatch.setattr(snapshot_module, "open_write", dying_open_write)
    with pytest.raises(OSError):
        write_snapshot(snap, files={"train.parquet": b"T", "validation.parquet": b"V"}, manifest={})
    assert read_manifest(snap) is None
    assert storage.list_uris(snap) == [join_uri(snap, "train.parquet")]


def test_streamed_files_land_together_or_not_at_all(storage_root: str) -> None:
    done = join_uri(storage_root, "streamed")
    with storage.SnapshotWriter(done) as writer:
        a, b = writer.open("a.bin"), writer.open("b.bin")
        for _ in range(3):
            a.write(b"aa")
            b.write(memoryview(b"b"))
        assert storage.list_uris(done) == []  # nothing visible while the files are written
        manifest = writer.commit({"seed": 1})
    assert manifest["files"] == {
        "a.bin": {"bytes": 6, "sha256": storage.content_hash(b"aaaaaa")},
        "b.bin": {"bytes": 3, "sha256": storage.content_hash(b"bbb")},
    }
    assert storage.read_bytes(join_uri(done, "b.bin")) == b"bbb"

    failed = join_uri(storage_root, "failed")
    with pytest.raises(ValueError, match="bad row"), storage.SnapshotWriter(failed) as writer:
        with writer.open("a.bin") as a:  # closed cleanly: it lands
            a.write(b"a")
        writer.open("b.bin").write(b"half")
        raise ValueError("bad row")
    assert read_manifest(failed) is None
    assert storage.list_uris(failed) == [join_uri(failed, "a.bin")]  # b.bin's half is gone, not under its name

    forgotten = join_uri(storage_root, "forgotten")
    with pytest.raises(StorageError, match="without commit"), storage.SnapshotWriter(forgotten) as writer:
        writer.open("a.bin").write(b"a")
    assert storage.list_uris(forgotten) == []


def test_corrupt_manifest_is_an_error_not_an_absent_snapshot(storage_root: str) -> None:
    snap = join_uri(storage_root, "corrupt")
    storage.write_bytes(join_uri(snap, MANIFEST_NAME), b"{not json")
    with pytest.raises(StorageError, match="manifest is not valid JSON"):
        read_manifest(snap)


def test_manifest_is_stable_json(storage_root: str) -> None:
    snap = join_uri(storage_root, "stable")
    write_snapshot(snap, files={"a": b"1"}, manifest={"z": 1, "a": 2})
    raw = storage.read_bytes(join_uri(snap, MANIFEST_NAME)).decode()
    assert list(json.loads(raw)) == ["a", "files", "z"]
