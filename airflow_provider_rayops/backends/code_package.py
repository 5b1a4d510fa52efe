"""Code a Ray job imports, packed as Ray packs it and uploaded through the dashboard.

Ray's runtime_env takes `py_modules` and `working_dir` as `gcs://_ray_pkg_<hash>.zip` URIs of
zips held by the cluster (`PUT /api/packages/gcs/<name>`); Ray's own client makes them, but it
needs Ray installed where Airflow runs. This module makes the same zips with the standard
library, so a bare Airflow worker can ship code:

    package = pack_folder(Path("myloops"), label="train.entrypoint module myloops")
    uri = upload(client, package)          # sent once: the name is the hash of the content
    runtime_env = {"py_modules": [uri]}

The zip is deterministic (sorted names, fixed timestamps), so the same files give the same URI
and an unchanged package is never sent twice. What is never packed: caches, VCS and virtualenv
folders, rayops' own state (`.rayops/`), data files and key or credential files
(`NEVER_SHIPPED`), plus the caller's gitignore-style `excludes`. Symlinks are not followed.
No Airflow and no Ray here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_rayops.hooks.ray_jobs_api import RayJobsClient

NEVER_SHIPPED = (
    # caches, VCS, environments, rayops' own state
    "__pycache__/", "*.py[cod]", ".git/", ".hg/", ".svn/", ".venv/", "venv/", ".tox/", ".nox/", ".mypy_cache/",
    ".pytest_cache/", ".ruff_cache/", ".ipynb_checkpoints/", "node_modules/", ".rayops/", ".DS_Store",
    # data and model files: they belong in storage, not in code
    "*.parquet", "*.csv", "*.tsv", "*.jsonl", "*.feather", "*.arrow", "*.avro", "*.orc", "*.npy", "*.npz",
    "*.pt", "*.pth", "*.ckpt", "*.safetensors", "*.onnx", "*.h5", "*.pkl", "*.pickle", "*.joblib",
    # keys and credentials
    ".env", ".env.*", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.kdbx", ".netrc", ".pypirc", "id_rsa*",
    "id_ecdsa*", "id_ed25519*", "credentials", "credentials.*", "secrets.*",
)  # fmt: skip
"""gitignore patterns never packed, whatever the excludes say."""

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say: the hash depends on content alone
MIB = 1024 * 1024


class CodeTooLarge(ValueError):
    """The files to ship add up to more than the cap; the message names the biggest ones."""


@dataclasses.dataclass(frozen=True)
class CodePackage:
    """One zip ready to upload: `uri` is the name Ray knows it by, `data` its bytes."""

    label: str
    uri: str
    data: bytes
    files: int
    size: int  # bytes before compression

    @property
    def zipped_size(self) -> int:
        return len(self.data)

    def describe(self) -> str:
        return f"{self.label}: {self.files} files, {_kib(self.size)} ({_kib(self.zipped_size)} zipped)"


def _kib(size: int) -> str:
    return f"{size / 1024:.1f} KiB" if size < MIB else f"{size / MIB:.1f} MiB"


def _spec(excludes: Iterable[str]):
    import pathspec  # a dependency of Airflow's core as well as ours

    return pathspec.GitIgnoreSpec.from_lines([*NEVER_SHIPPED, *excludes])


def code_files(path: Path, *, excludes: Sequence[str] = ()) -> list[tuple[str, Path]]:
    """(name inside the package, file) for everything under `path` that would ship, sorted.

    `path` may be a folder (its files, named relative to it) or one file. The folder's own
    .gitignore applies too. Symlinks are skipped: a link could lead anywhere on this machine."""
    if path.is_file():
        return [(path.name, path)]
    gitignore = path / ".gitignore"  # honoured as Ray's own client honours it
    own = gitignore.read_text(errors="replace").splitlines() if gitignore.is_file() and not gitignore.is_symlink() else []
    spec = _spec([*excludes, *own])
    found = []
    for root, dirs, files in os.walk(path, followlinks=False):
        here = Path(root)
        rel_root = here.relative_to(path)
        dirs[:] = sorted(d for d in dirs if not (here / d).is_symlink() and not spec.match_file(f"{(rel_root / d).as_posix()}/"))
        for name in sorted(files):
            rel = (rel_root / name).as_posix()
            if not (here / name).is_symlink() and not spec.match_file(rel):
                found.append((rel, here / name))
    return found


def check_size(files: Sequence[tuple[str, Path]], *, label: str, max_bytes: int, fix: str) -> int:
    """The files' total size; CodeTooLarge naming the three biggest when it is over `max_bytes`."""
    sizes = [(p.stat().st_size, rel) for rel, p in files]
    total = sum(size for size, _ in sizes)
    if total > max_bytes:
        biggest = ", ".join(f"{rel} ({_kib(size)})" for size, rel in sorted(sizes, reverse=True)[:3])
        raise CodeTooLarge(
            f"{label} would ship {_kib(total)} in {len(sizes)} files, over the {_kib(max_bytes)} cap; biggest: {biggest}. {fix}"
        )
    return total


def pack(files: Sequence[tuple[str, Path]], *, label: str, prefix: str = "") -> CodePackage:
    """A deterministic zip of `files`, each stored as `prefix + name`."""
    buffer = io.BytesIO()
    size = 0
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for rel, path in sorted(files):
            data = path.read_bytes()
            size += len(data)
            info = zipfile.ZipInfo(prefix + rel, date_time=_FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()[:32]
    return CodePackage(label=label, uri=f"gcs://_ray_pkg_{digest}.zip", data=data, files=len(files), size=size)


def pack_module(
    path: Path, *, label: str, excludes: Sequence[str] = (), max_bytes: int | None = None, fix: str = ""
) -> CodePackage:
    """A `py_modules` package: the folder (or single .py file) stored under its own name, so
    the folder Ray unpacks it into goes on the job's PYTHONPATH and `import <name>` finds it."""
    files = code_files(path, excludes=excludes)
    if max_bytes is not None:
        check_size(files, label=label, max_bytes=max_bytes, fix=fix)
    return pack(files, label=label, prefix="" if path.is_file() else f"{path.name}/")


def pack_working_dir(path: Path, *, label: str, excludes: Sequence[str] = ()) -> CodePackage:
    """A `working_dir` package: the folder's contents at the top, as the job's current folder."""
    return pack(code_files(path, excludes=excludes), label=label)


def upload(client: RayJobsClient, package: CodePackage) -> bool:
    """Make sure the cluster holds `package`; True when it had to be sent (False: it was there)."""
    if client.package_exists(package.uri):
        return False
    client.upload_package(package.uri, package.data)
    return True
