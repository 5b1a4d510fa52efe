"""S3 client benchmark: the minio client against pyarrow's S3FileSystem doing what `storage/` does.

    .venv/bin/python benchmarks/storage_clients.py        # 200 small objects, 500-key listing, 64 MiB, 3 runs
    .venv/bin/python benchmarks/storage_clients.py --repeats 1 --large-mib 8
    .venv/bin/python benchmarks/storage_clients.py --out benchmarks/STORAGE_RESULTS.md

Needs the `bench` extra for the minio side (`pip install -e '.[test,bench]'`: minio is no
dependency of rayops any more) and moto's server (the `test` extra). Nothing leaves 127.0.0.1.

The S3 endpoint is moto's ThreadedMotoServer in this process, on 127.0.0.1. Each run is a
fresh Python process (a Ray job's view) that creates each client once, as `storage/` does
with its cache, then runs, in this order: write 200 objects of 1 KiB (manifests), read them
back, `exists` on the 200 and on 200 absent keys, list a prefix of 500 keys (5 times), write
and read one 64 MiB object, and delete the 201 objects. Each client does it the way
`storage/ops.py` does: writes are spooled locally first (a writer that fails uploads nothing)
and uploaded once; reads take the whole object; `exists` asks about one key; listing is
recursive; delete says whether there was an object. Every step checks its result (bytes read
back, counts listed, booleans), so a run cannot time nothing.

- minio: what `storage/ops.py` did on the minio client before it moved to pyarrow
  (`get_object`, `put_object`, `stat_object`, `list_objects`, `stat_object` + `remove_object`).
- pyarrow.fs: `pyarrow.fs.S3FileSystem` as `storage/ops.py` now uses it: `open_input_file().read()`
  (HEAD + GET); one `write()` of the spooled bytes then `close()`, through a stream opened with
  `allow_delayed_open` under 5 MiB (one PUT), else a multipart upload started at open;
  `open_input_file()` for exists; `get_file_info(FileSelector(recursive=True))`; `delete_file()`.
- rayops storage: the public API of this checkout (`storage.write_bytes`, `read_bytes`, ...),
  to see what the wrapper adds on top of the client it uses.

Times are wall clock of each whole step as the caller sees it, client creation included once
per run; imports and the AWS SDK's start are reported apart (a Ray job has pyarrow loaded
anyway). The clients take turns step by step within a run, and who goes first rotates with
the step and the run, so a burst of load on this shared machine hits all of them; the table
reports medians over runs, and the load average. The server counts the HTTP requests of each
step (the child marks step boundaries with an unsigned request the counts leave out). Moto is
slow itself (milliseconds per request; it hashes every byte it stores): absolute numbers are
moto's. What carries over to MinIO are the request counts, and the ratios only roughly: a
faster server makes each client's own overhead per request weigh more.

Only the standard library is imported at the top: a child process imports what it times.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from versions import installed  # benchmarks/versions.py (this folder is on sys.path when run as a script)

BUCKET = "rayops-bench"
ACCESS_KEY = "bench-access"
SECRET_KEY = "bench-secret"
REGION = "us-east-1"
LISTING_PREFIX = "listing"
LIST_REPEATS = 5
SPOOL_BYTES = 32 * 1024 * 1024  # as storage/ops.py
SINGLE_PUT_BYTES = 5 * 1024 * 1024  # as storage/ops.py
CLIENTS = ["minio", "pyarrow.fs", "rayops storage"]
PHASE_MARK = "__phase__"
# As storage/ops.py: the AWS SDK's defaults (1 s to connect, 3 s without a byte) fail a busy server.
CONNECT_TIMEOUT_S = 10.0
REQUEST_TIMEOUT_S = 60.0

STEPS = [
    ("client", "create the client"),
    ("write_small", "write {small} x 1 KiB"),
    ("read_small", "read {small} x 1 KiB"),
    ("exists_present", "exists, {small} present keys"),
    ("exists_absent", "exists, {small} absent keys"),
    ("list", "list a {list_keys}-key prefix, {list_repeats} times"),
    ("write_large", "write 1 x {large_mib} MiB"),
    ("read_large", "read 1 x {large_mib} MiB"),
    ("delete", "delete {small} + 1 objects"),
]


# --- the clients: each does what storage/ops.py does ---------------------------------------------


class MinioClient:
    def __init__(self, endpoint: str) -> None:
        from minio import Minio

        self.client = Minio(
            endpoint.split("://", 1)[1], access_key=ACCESS_KEY, secret_key=SECRET_KEY, region=REGION, secure=False
        )

    def write(self, key: str, data: bytes) -> None:
        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:  # what open_write hands its writer
            spool.write(data)
            size = spool.tell()
            spool.seek(0)
            self.client.put_object(BUCKET, key, spool, size)

    def read(self, key: str) -> bytes:
        response = self.client.get_object(BUCKET, key)
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def exists(self, key: str) -> bool:
        from minio.error import S3Error

        try:
            self.client.stat_object(BUCKET, key)
        except S3Error as exc:
            if exc.code in ("NoSuchKey", "NoSuchObject", "NotFound", "NoSuchBucket"):
                return False
            raise
        return True

    def list(self, prefix: str) -> list[str]:
        objects = self.client.list_objects(BUCKET, prefix=f"{prefix}/", recursive=True)
        return sorted(obj.object_name for obj in objects if not obj.is_dir)

    def delete(self, key: str) -> bool:
        if not self.exists(key):
            return False
        self.client.remove_object(BUCKET, key)
        return True


class ArrowClient:
    def __init__(self, endpoint: str) -> None:
        import pyarrow.fs

        options = {
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            "region": REGION,
            "scheme": "http",
            "endpoint_override": endpoint.split("://", 1)[1],
            "connect_timeout": CONNECT_TIMEOUT_S,
            "request_timeout": REQUEST_TIMEOUT_S,
        }
        # As storage/ops.py: objects under a part go through a delayed-open stream (one PUT);
        # the rest through one that starts its multipart upload when it opens.
        self.fs = pyarrow.fs.S3FileSystem(**options)
        self.single_put = pyarrow.fs.S3FileSystem(**options, allow_delayed_open=True)

    def write(self, key: str, data: bytes) -> None:
        import mmap

        with tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES) as spool:
            spool.write(data)
            size = spool.seek(0, os.SEEK_END)
            spool.seek(0)
            body = spool.read() if size <= SPOOL_BYTES else mmap.mmap(spool.fileno(), 0, access=mmap.ACCESS_READ)
            stream = (self.single_put if size < SINGLE_PUT_BYTES else self.fs).open_output_stream(f"{BUCKET}/{key}")
            stream.write(body)
            stream.close()

    def read(self, key: str) -> bytes:
        # A random-access file knows its size (from a HEAD): read() is then one GET. A stream's
        # read() would fetch the object in many ranged GETs.
        with self.fs.open_input_file(f"{BUCKET}/{key}") as file:
            return file.read()

    def exists(self, key: str) -> bool:
        try:
            self.fs.open_input_file(f"{BUCKET}/{key}")
        except FileNotFoundError:
            return False
        return True

    def list(self, prefix: str) -> list[str]:
        import pyarrow.fs

        infos = self.fs.get_file_info(pyarrow.fs.FileSelector(f"{BUCKET}/{prefix}", recursive=True, allow_not_found=True))
        return sorted(info.path.split("/", 1)[1] for info in infos if info.type == pyarrow.fs.FileType.File)

    def delete(self, key: str) -> bool:
        try:
            self.fs.delete_file(f"{BUCKET}/{key}")
        except FileNotFoundError:
            return False
        return True


class StorageClient:
    def __init__(self, endpoint: str) -> None:
        from airflow_provider_rayops import storage

        self.storage = storage
        self.settings = storage.S3Settings(endpoint_url=endpoint, access_key=ACCESS_KEY, secret_key=SECRET_KEY, region=REGION)
        # What the first call of a Ray job builds and caches; every later call reuses it.
        storage.filesystem(f"s3://{BUCKET}/x", settings=self.settings)

    def _uri(self, key: str) -> str:
        return f"s3://{BUCKET}/{key}"

    def write(self, key: str, data: bytes) -> None:
        self.storage.write_bytes(self._uri(key), data, settings=self.settings)

    def read(self, key: str) -> bytes:
        return self.storage.read_bytes(self._uri(key), settings=self.settings)

    def exists(self, key: str) -> bool:
        return self.storage.exists(self._uri(key), settings=self.settings)

    def list(self, prefix: str) -> list[str]:
        cut = len(f"s3://{BUCKET}/")
        return [uri[cut:] for uri in self.storage.list_uris(self._uri(prefix), settings=self.settings)]

    def delete(self, key: str) -> bool:
        return self.storage.delete(self._uri(key), settings=self.settings)


# --- one measurement (child process) -------------------------------------------------------------


def child(names: list[str], endpoint: str, prefix: str, small: int, list_keys: int, large_mib: int, rotation: int) -> None:
    """Every step with every client, fresh clients, one process; print one JSON line of seconds.

    The clients take turns step by step (who goes first rotates with the step and the run), so
    that a burst of load on the shared machine lands on all of them instead of on one.
    """

    def mark(label: str) -> None:
        # An unsigned HEAD the server logs: the parent counts requests per step between marks.
        request = urllib.request.Request(f"{endpoint}/{BUCKET}/{PHASE_MARK}/{label}", method="HEAD")
        with contextlib.suppress(OSError):  # 403/404 is expected; the request was logged all the same
            urllib.request.urlopen(request, timeout=60).close()

    imports: dict[str, float] = {}
    for module in ("pyarrow.fs", "minio", "airflow_provider_rayops.storage"):
        t = time.perf_counter()
        __import__(module)
        imports[module] = time.perf_counter() - t
    # The AWS SDK starts once per process, on the first S3FileSystem; timed here so that neither
    # pyarrow-based client's creation carries it depending on which went first.
    import pyarrow.fs

    t = time.perf_counter()
    pyarrow.fs.ensure_s3_initialized()
    imports["AWS SDK start (pyarrow)"] = time.perf_counter() - t

    small_data = [os.urandom(1024) for _ in range(small)]
    large_data = os.urandom(large_mib * 1024 * 1024)
    factories = {"minio": MinioClient, "pyarrow.fs": ArrowClient, "rayops storage": StorageClient}
    clients: dict[str, Any] = {}
    keys = {n: [f"{prefix}/{slug(n)}/manifests/{i:04d}/manifest.json" for i in range(small)] for n in names}
    absent = {n: [f"{prefix}/{slug(n)}/absent/{i:04d}/manifest.json" for i in range(small)] for n in names}
    large = {n: f"{prefix}/{slug(n)}/models/model.bin" for n in names}

    def create(n: str) -> None:
        clients[n] = factories[n](endpoint)

    def write_small(n: str) -> None:
        for key, data in zip(keys[n], small_data, strict=True):
            clients[n].write(key, data)

    def read_small(n: str) -> None:
        assert [clients[n].read(key) for key in keys[n]] == small_data, f"{n}: small objects did not read back"

    # Lists, not generators, under all() / any(): every call must run, whatever the first answers.
    def exists_present(n: str) -> None:
        found = [clients[n].exists(key) for key in keys[n]]
        assert all(found), f"{n}: exists missed a present key"

    def exists_absent(n: str) -> None:
        found = [clients[n].exists(key) for key in absent[n]]
        assert not any(found), f"{n}: exists found an absent key"

    def listing(n: str) -> None:
        for _ in range(LIST_REPEATS):
            found = clients[n].list(LISTING_PREFIX)
            assert len(found) == list_keys, f"{n}: listed {len(found)} keys, expected {list_keys}"

    def write_large(n: str) -> None:
        clients[n].write(large[n], large_data)

    def read_large(n: str) -> None:
        assert clients[n].read(large[n]) == large_data, f"{n}: the large object did not read back"

    def delete(n: str) -> None:
        deleted = [clients[n].delete(key) for key in [*keys[n], large[n]]]
        assert all(deleted), f"{n}: delete found nothing"

    work = [create, write_small, read_small, exists_present, exists_absent, listing, write_large, read_large, delete]
    seconds: dict[str, dict[str, float]] = {n: {} for n in names}
    for index, ((step, _label), fn) in enumerate(zip(STEPS, work, strict=True)):
        shift = (rotation + index) % len(names)
        for n in names[shift:] + names[:shift]:
            mark(f"{step}.{slug(n)}")
            start = time.perf_counter()
            fn(n)
            seconds[n][step] = time.perf_counter() - start
    mark("done")
    for n in names:
        assert not clients[n].exists(keys[n][0]), f"{n}: a deleted object still exists"
    print("RESULT " + json.dumps({"imports": imports, "seconds": seconds}))


def slug(name: str) -> str:
    return name.replace(" ", "-").replace(".", "-")


# --- the driver ----------------------------------------------------------------------------------


class RequestCounter(logging.Handler):
    """Counts the requests moto's server logs, per step and client, from the child's marks."""

    _LINE = re.compile(r"([A-Z]+) (/\S*) HTTP/")

    def __init__(self) -> None:
        super().__init__()
        self.counts_lock = threading.Lock()  # not `lock`: logging.Handler holds its own under that name
        self.label = "other"
        self.counts: dict[str, int] = {}

    def reset(self) -> dict[str, int]:
        with self.counts_lock:
            counts, self.counts, self.label = self.counts, {}, "other"
        return counts

    def emit(self, record: logging.LogRecord) -> None:
        found = self._LINE.search(record.getMessage())
        if not found:
            return
        with self.counts_lock:
            path = found.group(2)
            if f"/{PHASE_MARK}/" in path:
                self.label = path.rsplit("/", 1)[1]
            else:
                self.counts[self.label] = self.counts.get(self.label, 0) + 1


def run_child(args: list[str]) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"measurement {args} failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def populate_listing(endpoint: str, list_keys: int) -> None:
    """The bucket, and the prefix every run lists (read-only, so shared by all runs)."""
    import pyarrow.fs

    fs = pyarrow.fs.S3FileSystem(
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        region=REGION,
        scheme="http",
        endpoint_override=endpoint.split("://", 1)[1],
        allow_bucket_creation=True,
        allow_delayed_open=True,
        connect_timeout=CONNECT_TIMEOUT_S,
        request_timeout=REQUEST_TIMEOUT_S,
    )
    fs.create_dir(BUCKET)
    for i in range(list_keys):
        with fs.open_output_stream(f"{BUCKET}/{LISTING_PREFIX}/part-{i // 50:02d}/{i:04d}.json") as out:
            out.write(b"{}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--small", type=int, default=200, help="objects of 1 KiB written, read, checked, deleted")
    parser.add_argument("--list-keys", type=int, default=500, help="keys under the listed prefix")
    parser.add_argument("--large-mib", type=int, default=64, help="size of the one large object")
    parser.add_argument("--clients", nargs="+", default=CLIENTS, choices=CLIENTS)
    parser.add_argument("--out", type=Path, help="also write the results as markdown to this file")
    parser.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child:
        names, endpoint, prefix, small, list_keys, large_mib, rotation = options.child
        child(names.split(","), endpoint, prefix, int(small), int(list_keys), int(large_mib), int(rotation))
        return 0
    names = [n for n in CLIENTS if n in options.clients]

    from moto.server import ThreadedMotoServer

    counter = RequestCounter()
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.setLevel(logging.INFO)
    werkzeug.propagate = False
    werkzeug.addHandler(counter)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    started = time.perf_counter()
    runs: list[dict] = []
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        populate_listing(endpoint, options.list_keys)
        counter.reset()
        print(f"moto on {endpoint}: bucket {BUCKET}, {options.list_keys} keys under {LISTING_PREFIX}/", flush=True)
        for repeat in range(options.repeats):
            load_before = os.getloadavg()[0]
            sizes = [str(options.small), str(options.list_keys), str(options.large_mib)]
            result = run_child([",".join(names), endpoint, f"runs/{repeat}", *sizes, str(repeat)])
            result["requests"] = counter.reset()
            result["load"] = max(load_before, os.getloadavg()[0])
            runs.append(result)
            totals = ", ".join(f"{n} {sum(result['seconds'][n].values()):.2f} s" for n in names)
            print(f"run {repeat + 1}/{options.repeats}: {totals}; load {result['load']:.1f}", flush=True)
    finally:
        server.stop()
    table = render(options, names, runs, time.perf_counter() - started)
    print()
    print(table)
    if options.out:
        options.out.write_text(table)
    return 0


def render(options: argparse.Namespace, names: list[str], runs: list[dict], total_s: float) -> str:
    def median(name: str, step: str) -> float:
        return statistics.median(r["seconds"][name][step] for r in runs)

    def total(name: str) -> float:
        return statistics.median(sum(r["seconds"][name].values()) for r in runs)

    def requests(name: str, step: str) -> str:
        counts = sorted({r["requests"].get(f"{step}.{slug(name)}", 0) for r in runs})
        return "/".join(str(c) for c in counts)

    base, other = "minio", "pyarrow.fs"
    compare = base in names and other in names
    loads = [r["load"] for r in runs]
    fmt = {"small": options.small, "list_keys": options.list_keys, "list_repeats": LIST_REPEATS, "large_mib": options.large_mib}
    header = ["step", *[f"{n} (s)" for n in names]]
    if compare:
        header.append(f"{other} / {base}")
    header.append("S3 requests: " + " / ".join(names))
    lines = [
        f"Seconds per step, median of {len(runs)} runs; moto {installed('moto')} on 127.0.0.1, minio {installed('minio')}, "
        f"pyarrow {installed('pyarrow')}, Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores; "
        f"load average {min(loads):.1f} to {max(loads):.1f}; whole run {total_s:.0f} s.",
        "",
        "| " + " | ".join(header) + " |",
        "| --- |" + " ---: |" * (len(header) - 1),
    ]
    for step, label in STEPS:
        row = [label.format(**fmt), *[f"{median(n, step):.3f}" for n in names]]
        if compare:
            row.append(f"{median(other, step) / median(base, step):.2f}x" if median(base, step) >= 0.001 else "")
        row.append(" / ".join(requests(n, step) for n in names))
        lines.append("| " + " | ".join(row) + " |")
    row = ["**total**", *[f"**{total(n):.2f}**" for n in names]]
    if compare:
        row.append(f"**{total(other) / total(base):.2f}x**")
    row.append("")
    lines.append("| " + " | ".join(row) + " |")
    imports = ", ".join(f"{m} {statistics.median(r['imports'][m] for r in runs):.2f} s" for m in runs[0]["imports"])
    lines += [
        "",
        f"Once per process, in this order, not in the totals (a Ray job has pyarrow loaded already): {imports}.",
        f"{other} / {base} under 1.00x: pyarrow.fs took less time. Request counts are per step and run (two",
        "values: they differed between runs).",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
