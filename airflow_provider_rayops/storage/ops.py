"""Read, write, list and delete objects at `file://` and `s3://` URIs with one code path.

Writes are atomic: nothing appears under the final name until the writer has finished.
For `file://` data goes to a hidden temporary file beside the target, which is fsynced and
renamed over it; for `s3://` the object is uploaded once the writer has finished, and S3
makes an object visible only when its PUT (or the completion of its multipart upload)
succeeds. A writer that raises leaves nothing behind under the final name.

Every function takes `settings` for `s3://` URIs; left out, `S3Settings.from_env()` is used.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, BinaryIO, cast

from airflow_provider_rayops.storage.settings import S3Settings
from airflow_provider_rayops.storage.uri import StorageError, StorageNotFoundError, StorageURI, parse_uri

if TYPE_CHECKING:
    import pyarrow.fs
    from minio import Minio

# Temporary files of in-flight writes carry this marker; listings never show them.
_TMP_MARKER = ".rayops-tmp-"
# An s3 writer keeps this much in memory before spilling to a local temporary file.
_SPOOL_BYTES = 32 * 1024 * 1024


def read_bytes(uri: str, *, settings: S3Settings | None = None) -> bytes:
    """The whole content of the object or file at `uri`; StorageNotFoundError if it is absent."""
    loc = parse_uri(uri)
    if loc.scheme == "file":
        try:
            with open(loc.path, "rb") as fh:
                return fh.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise StorageNotFoundError(str(loc), "no such file") from exc
    with _s3_errors(loc):
        response = _client(settings).get_object(loc.bucket, loc.path)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()


def write_bytes(uri: str, data: bytes, *, settings: S3Settings | None = None) -> None:
    """Write `data` to `uri` atomically, replacing what was there. Parent folders are created."""
    with open_write(uri, settings=settings) as fh:
        fh.write(data)


@contextlib.contextmanager
def open_write(uri: str, *, settings: S3Settings | None = None) -> Iterator[IO[bytes]]:
    """A binary file to write `uri` through; the object appears only when the block exits cleanly.

    If the block raises, the partial data is discarded and whatever was at `uri` before stays.
    """
    loc = parse_uri(uri)
    if not loc.path or loc.path.endswith("/"):
        raise StorageError(str(loc), "cannot write to a folder or bucket; name an object")
    if loc.scheme == "file":
        folder, name = os.path.split(loc.path)
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}{_TMP_MARKER}")
        try:
            with os.fdopen(fd, "wb") as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, loc.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return
    client = _client(settings)
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
        yield spool
        size = spool.tell()
        spool.seek(0)
        with _s3_errors(loc):
            # minio asks for a BinaryIO but only read()s it; SpooledTemporaryFile is typed as IO[bytes].
            client.put_object(loc.bucket, loc.path, cast(BinaryIO, spool), size)


def exists(uri: str, *, settings: S3Settings | None = None) -> bool:
    """Whether a file or object (not a folder) exists at `uri`."""
    loc = parse_uri(uri)
    if loc.scheme == "file":
        return os.path.isfile(loc.path)
    if not loc.path:
        return False
    from minio.error import S3Error

    try:
        _client(settings).stat_object(loc.bucket, loc.path)
    except S3Error as exc:
        if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound", "NoSuchBucket"):
            return False
        raise _wrap(loc, exc) from exc
    return True


def list_uris(prefix_uri: str, *, settings: S3Settings | None = None) -> list[str]:
    """URIs of every file or object under the folder `prefix_uri`, recursively, sorted.

    `s3://b/snaps` lists `s3://b/snaps/...`, not `s3://b/snapshots-old/...`. A missing
    folder lists as empty. Temporary files of writes in flight are not listed.
    """
    loc = parse_uri(prefix_uri)
    if loc.scheme == "file":
        root = loc.path.rstrip("/") or "/"
        found: list[str] = []
        for folder, _dirs, files in os.walk(root):
            found.extend(f"file://{os.path.join(folder, name)}" for name in files if _TMP_MARKER not in name)
        return sorted(found)
    prefix = loc.path.rstrip("/")
    prefix = f"{prefix}/" if prefix else ""
    with _s3_errors(loc):
        objects = _client(settings).list_objects(loc.bucket, prefix=prefix, recursive=True)
        return sorted(f"s3://{loc.bucket}/{obj.object_name}" for obj in objects if not obj.is_dir)


def download_folder(prefix_uri: str, dest: str | os.PathLike[str], *, settings: S3Settings | None = None) -> list[str]:
    """Copy every file under the folder `prefix_uri` into the local folder `dest`, keeping their
    paths below `prefix_uri`; returns the local paths written (none for a missing or empty folder)."""
    prefix = prefix_uri.rstrip("/") + "/"
    written = []
    for child in list_uris(prefix_uri, settings=settings):
        relative = child[len(prefix) :] if child.startswith(prefix) else child.rsplit("/", 1)[-1]
        target = os.path.join(dest, relative)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "wb") as fh:
            fh.write(read_bytes(child, settings=settings))
        written.append(target)
    return written


def delete(uri: str, *, settings: S3Settings | None = None) -> bool:
    """Delete the file or object at `uri`; returns whether there was one. Folders are not deleted."""
    loc = parse_uri(uri)
    if loc.scheme == "file":
        try:
            os.unlink(loc.path)
        except FileNotFoundError:
            return False
        return True
    if not exists(uri, settings=settings):
        return False
    with _s3_errors(loc):
        _client(settings).remove_object(loc.bucket, loc.path)
    return True


def filesystem(uri: str, *, settings: S3Settings | None = None) -> tuple[pyarrow.fs.FileSystem, str]:
    """A pyarrow filesystem and the path in it, for pyarrow / Ray Data readers and writers.

    `pq.read_table(path, filesystem=fs)`, `ray.data.read_parquet(path, filesystem=fs)`.
    Writes through it are not atomic: use `open_write` for artifacts with a final name.
    """
    import pyarrow.fs

    loc = parse_uri(uri)
    if loc.scheme == "file":
        return pyarrow.fs.LocalFileSystem(), loc.path
    return _arrow_s3(_settings(settings)), f"{loc.bucket}/{loc.path}".rstrip("/")


def _settings(settings: S3Settings | None) -> S3Settings:
    return settings if settings is not None else S3Settings.from_env()


def _client(settings: S3Settings | None) -> Minio:
    return _minio(_settings(settings))


@functools.lru_cache(maxsize=8)
def _minio(settings: S3Settings) -> Minio:
    from minio import Minio

    return Minio(
        settings.endpoint,
        access_key=settings.access_key,
        secret_key=settings.secret_key,
        region=settings.region,
        secure=bool(settings.secure),
    )


@functools.lru_cache(maxsize=8)
def _arrow_s3(settings: S3Settings) -> pyarrow.fs.S3FileSystem:
    import pyarrow.fs

    kwargs: dict[str, object] = {"region": settings.region, "scheme": "https" if settings.secure else "http"}
    if settings.endpoint_url:
        kwargs["endpoint_override"] = settings.endpoint
    if settings.access_key and settings.secret_key:
        kwargs["access_key"] = settings.access_key
        kwargs["secret_key"] = settings.secret_key
    return pyarrow.fs.S3FileSystem(**kwargs)


_NOT_FOUND = {"NoSuchKey": "no such object", "NoSuchObject": "no such object", "NoSuchBucket": "no such bucket"}


def _wrap(loc: StorageURI, exc: Exception) -> StorageError:
    from minio.error import S3Error

    if isinstance(exc, S3Error):
        if exc.code in _NOT_FOUND:
            return StorageNotFoundError(str(loc), _NOT_FOUND[exc.code])
        # code and message only: the full S3Error text carries request ids and headers.
        return StorageError(str(loc), f"S3 error {exc.code}: {exc.message}")
    return StorageError(str(loc), f"S3 request failed: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def _s3_errors(loc: StorageURI) -> Iterator[None]:
    from minio.error import MinioException
    from urllib3.exceptions import HTTPError

    try:
        yield
    except (MinioException, HTTPError, OSError) as exc:
        if isinstance(exc, StorageError):
            raise
        raise _wrap(loc, exc) from exc
