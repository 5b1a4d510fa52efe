"""Read, write, list and delete objects at `file://` and `s3://` URIs with one code path.

Writes are atomic: nothing appears under the final name until the writer has finished.
For `file://` data goes to a hidden temporary file beside the target, which is fsynced and
renamed over it; for `s3://` the writer's bytes are spooled locally and uploaded once the
writer has finished, and S3 makes an object visible only when its PUT (or the completion of
its multipart upload) succeeds. A writer that raises leaves nothing behind under the final name.

`s3://` goes through pyarrow's S3 filesystem, cached per `S3Settings`: the one `filesystem()`
hands to pyarrow and Ray Data. Two things it does that a bare S3 client would not, neither
visible through this API: a read is a HEAD and then a GET (pyarrow learns the size first),
and deleting an object leaves an empty `folder/` marker object for its folder (pyarrow keeps
folders from vanishing that way); listings here skip such markers.
`benchmarks/storage_clients.py` measures what this costs against the minio client that
storage used before.

Every function takes `settings` for `s3://` URIs; left out, `S3Settings.from_env()` is used.
"""

from __future__ import annotations

import contextlib
import functools
import mmap
import os
import re
import tempfile
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING

from airflow_provider_rayops.storage.settings import S3Settings
from airflow_provider_rayops.storage.uri import StorageError, StorageNotFoundError, StorageURI, parse_uri

if TYPE_CHECKING:
    import pyarrow.fs

# Temporary files of in-flight writes carry this marker; listings never show them.
_TMP_MARKER = ".rayops-tmp-"
# An s3 writer keeps this much in memory before spilling to a local temporary file.
_SPOOL_BYTES = 32 * 1024 * 1024
# S3's smallest part size: below it no pyarrow starts a multipart upload, so fewer bytes
# written to a stream opened with `allow_delayed_open` stay in memory until close() sends them
# in one PUT.
_SINGLE_PUT_BYTES = 5 * 1024 * 1024
# The AWS SDK's own defaults give up on a server that takes 1 s to accept a connection or
# 3 s without sending a byte (a MinIO hashing a large part under load does that); the minio
# client storage used before waited 5 minutes for either.
_CONNECT_TIMEOUT_S = 10.0
_REQUEST_TIMEOUT_S = 60.0


def read_bytes(uri: str, *, settings: S3Settings | None = None) -> bytes:
    """The whole content of the object or file at `uri`; StorageNotFoundError if it is absent."""
    loc = parse_uri(uri)
    if loc.scheme == "file":
        try:
            with open(loc.path, "rb") as fh:
                return fh.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise StorageNotFoundError(str(loc), "no such file") from exc
    if not loc.path or loc.path.endswith("/"):
        raise StorageNotFoundError(str(loc), "no such object (a folder or bucket is not one)")
    s3 = _settings(settings)
    fs = _arrow_s3(s3)
    with _s3_errors(str(loc), s3):
        try:
            # A random-access file knows its size (the HEAD), so read() is one GET; a stream's
            # read() would fetch the object in many small ranges.
            source = fs.open_input_file(_arrow_path(loc))
        except FileNotFoundError as exc:
            raise _absent(fs, loc) from exc
        with source:
            return source.read()


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
    s3 = _settings(settings)
    _arrow_s3(s3)  # a client that cannot be made fails before the writer works, not after
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES) as spool:
        yield spool
        _upload(loc, spool, s3)


def _upload(loc: StorageURI, spool: IO[bytes], settings: S3Settings) -> None:
    """Upload the spooled bytes in one PUT or, from `_SINGLE_PUT_BYTES` on, one multipart upload.

    pyarrow's S3 stream cannot be aborted from Python, and it closes itself when collected: a
    close completes what it holds. A delayed-open stream whose multipart upload failed to start
    would even PUT what it buffered (nothing: an empty object). So the stream only ever gets the
    whole content, in one write(), once the writer is done, and:
    - small: a delayed-open stream; write() only buffers, close() is the one PUT, all or nothing.
    - large: a stream whose multipart upload starts when it opens (failing, there is no stream);
      a part that fails to upload fails the close after it, and a failed close never completes.
      A write() that fails for want of memory or threads would leave a stream that completes
      with the parts it sent: the one way left to a partial object, as remote as it gets.
    An upload that failed may leave an incomplete multipart upload, which no listing or read
    sees; a bucket lifecycle rule (AbortIncompleteMultipartUpload) reclaims its space.
    """
    size = spool.seek(0, os.SEEK_END)
    spool.seek(0)
    # Up to the spool size the bytes are in memory anyway; past it, map the spilled file.
    fs = _arrow_s3_single_put(settings) if size < _SINGLE_PUT_BYTES else _arrow_s3(settings)
    with contextlib.ExitStack() as stack:
        if size <= _SPOOL_BYTES:
            body: bytes | mmap.mmap = spool.read()
        else:
            body = stack.enter_context(mmap.mmap(spool.fileno(), 0, access=mmap.ACCESS_READ))
        with _s3_errors(str(loc), settings):
            stream = fs.open_output_stream(_arrow_path(loc))
            stream.write(body)
            stream.close()


def exists(uri: str, *, settings: S3Settings | None = None) -> bool:
    """Whether a file or object (not a folder) exists at `uri`."""
    loc = parse_uri(uri)
    if loc.scheme == "file":
        return os.path.isfile(loc.path)
    if not loc.path or loc.path.endswith("/"):
        return False
    s3 = _settings(settings)
    with _s3_errors(str(loc), s3):
        try:
            # One HEAD; get_file_info() would also ask whether a folder of that name exists.
            _arrow_s3(s3).open_input_file(_arrow_path(loc)).close()
        except FileNotFoundError:
            return False
    return True


def list_uris(prefix_uri: str, *, settings: S3Settings | None = None) -> list[str]:
    """URIs of every file or object under the folder `prefix_uri`, recursively, sorted.

    `s3://b/snaps` lists `s3://b/snaps/...`, not `s3://b/snapshots-old/...`. A missing
    folder lists as empty (a missing bucket is StorageNotFoundError). Temporary files of
    writes in flight are not listed.
    """
    loc = parse_uri(prefix_uri)
    if loc.scheme == "file":
        root = loc.path.rstrip("/") or "/"
        found: list[str] = []
        for folder, _dirs, files in os.walk(root):
            found.extend(f"file://{os.path.join(folder, name)}" for name in files if _TMP_MARKER not in name)
        return sorted(found)
    import pyarrow.fs

    s3 = _settings(settings)
    fs = _arrow_s3(s3)
    prefix = loc.path.strip("/")
    selector = pyarrow.fs.FileSelector(f"{loc.bucket}/{prefix}" if prefix else loc.bucket, recursive=True, allow_not_found=True)
    with _s3_errors(str(loc), s3):
        listed = sorted(f"s3://{info.path}" for info in fs.get_file_info(selector) if info.type == pyarrow.fs.FileType.File)
        if not listed and fs.get_file_info(loc.bucket).type == pyarrow.fs.FileType.NotFound:
            raise StorageNotFoundError(str(loc), "no such bucket")
    return listed


def download_folder(prefix_uri: str, dest: str | os.PathLike[str], *, settings: S3Settings | None = None) -> list[str]:
    """Copy every file under the folder `prefix_uri` into the local folder `dest`, keeping their
    paths below `prefix_uri`; returns the local paths written (none for a missing or empty folder)."""
    prefix = prefix_uri.rstrip("/") + "/"
    root = os.path.realpath(dest)
    written = []
    for child in list_uris(prefix_uri, settings=settings):
        relative = child[len(prefix) :] if child.startswith(prefix) else child.rsplit("/", 1)[-1]
        target = os.path.realpath(os.path.join(root, relative))
        if os.path.commonpath([root, target]) != root:
            # An S3 key may hold `../`: it must not write outside the folder it is copied into.
            raise StorageError(child, f"its path leads outside the folder it is copied into ({dest})")
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
    if not loc.path or loc.path.endswith("/"):
        return False
    s3 = _settings(settings)
    with _s3_errors(str(loc), s3):
        try:
            _arrow_s3(s3).delete_file(_arrow_path(loc))
        except FileNotFoundError:
            return False
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


def _arrow_path(loc: StorageURI) -> str:
    return f"{loc.bucket}/{loc.path}"


def s3_filesystem(settings: S3Settings) -> pyarrow.fs.S3FileSystem:
    """pyarrow's S3 filesystem for `settings` (cached per settings), for code outside storage/."""
    return _arrow_s3(settings)


@functools.lru_cache(maxsize=8)
def _arrow_s3(settings: S3Settings) -> pyarrow.fs.S3FileSystem:
    """The S3 filesystem for `settings`: reads, listings, deletes, large writes, `filesystem()`."""
    import pyarrow.fs

    return pyarrow.fs.S3FileSystem(**_arrow_options(settings))


@functools.lru_cache(maxsize=8)
def _arrow_s3_single_put(settings: S3Settings) -> pyarrow.fs.S3FileSystem:
    """The same with `allow_delayed_open`: an output stream of fewer bytes than a part is one PUT.

    Only for `_upload`'s small objects: past a part, its streams start their multipart upload
    inside write(), where a failure to start it leaves a stream that PUTs an empty object when
    it closes (see `_upload`).
    """
    import pyarrow.fs

    return pyarrow.fs.S3FileSystem(**_arrow_options(settings), allow_delayed_open=True)


def _arrow_options(settings: S3Settings) -> dict[str, object]:
    options: dict[str, object] = {
        "region": settings.region,
        "scheme": "https" if settings.secure else "http",
        "connect_timeout": _CONNECT_TIMEOUT_S,
        "request_timeout": _REQUEST_TIMEOUT_S,
    }
    if settings.endpoint_url:
        options["endpoint_override"] = settings.endpoint
    if settings.access_key and settings.secret_key:
        options["access_key"] = settings.access_key
        options["secret_key"] = settings.secret_key
    return options


def _list_buckets(settings: S3Settings) -> list[str]:
    """Names of the buckets the settings' credentials can see (the connection test's question).

    ImportError when pyarrow (with S3 support) is not installed, as on the Airflow side.
    """
    import pyarrow.fs

    with _s3_errors("s3://", settings):
        infos = _arrow_s3(settings).get_file_info(pyarrow.fs.FileSelector("", recursive=False))
    return sorted(info.path for info in infos)


def _absent(fs: pyarrow.fs.S3FileSystem, loc: StorageURI) -> StorageNotFoundError:
    """Not found: the object, or its whole bucket? (A HEAD of an object cannot tell: it has no body.)"""
    import pyarrow.fs

    if fs.get_file_info(loc.bucket).type == pyarrow.fs.FileType.NotFound:
        return StorageNotFoundError(str(loc), "no such bucket")
    return StorageNotFoundError(str(loc), "no such object")


# pyarrow words S3 failures as "...: AWS Error <CODE> during <Operation> operation: <message>",
# CODE being the AWS SDK's name for the error (NO_SUCH_BUCKET, ACCESS_DENIED, NETWORK_CONNECTION,
# UNKNOWN (HTTP status 400), [code 133]).
_AWS_ERROR = re.compile(r"AWS Error (?P<code>.+?) during (?P<operation>\w+) operation: (?P<message>.*)", re.DOTALL)
_REQUEST_ID = re.compile(r"\s*\((?:Request|Host) ID: [^)]*\)")
# A missing object comes as FileNotFoundError (from a HEAD), handled where it can happen.
_NOT_FOUND = {"NO_SUCH_BUCKET": "no such bucket"}


def _wrap(where: str, exc: Exception, settings: S3Settings) -> StorageError:
    """Our error for a pyarrow S3 failure: the code, operation and message, never request ids or keys."""
    found = _AWS_ERROR.search(str(exc))
    if found:
        code = found["code"]
        if code in _NOT_FOUND:
            return StorageNotFoundError(where, _NOT_FOUND[code])
        message = " ".join(_REQUEST_ID.sub("", found["message"]).split())
        problem = f"S3 error {code} during {found['operation']}: {message}"
    else:
        problem = f"S3 request failed: {type(exc).__name__}: {' '.join(str(exc).split())}"
    for secret in (settings.secret_key, settings.access_key):
        if secret:
            problem = problem.replace(secret, "***")
    return StorageError(where, problem[:500])


@contextlib.contextmanager
def _s3_errors(where: str, settings: S3Settings) -> Iterator[None]:
    import pyarrow

    try:
        yield
    except StorageError:
        raise
    except (OSError, pyarrow.ArrowException) as exc:
        raise _wrap(where, exc, settings) from exc
