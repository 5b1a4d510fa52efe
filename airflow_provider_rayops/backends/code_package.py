"""Code a Ray job imports, packed as Ray packs it and uploaded through the dashboard.

Ray's runtime_env takes `py_modules` and `working_dir` as `gcs://_ray_pkg_<hash>.zip` URIs of
zips held by the cluster (`PUT /api/packages/gcs/<name>`); Ray's own client makes them, but it
needs Ray installed where Airflow runs. This module makes the same zips with the standard
library, so a bare Airflow worker can ship code:

    package = pack_module(Path("myloops"), label="module myloops", guarded=True)
    upload(client, package)                # sent once: its name is the hash of its files
    runtime_env = {"py_modules": [package.uri]}

The name hashes each file's path, mode and bytes (not the zip's bytes, which vary with the
zlib build), so the same files give the same URI and an unchanged package is sent once.
Regular files only: symlinks, FIFOs and devices are skipped (a link could lead anywhere on this
machine; reading a FIFO would block). What is left out, like Ray's own client:

- always: caches, VCS and virtualenv folders (`ALWAYS_SKIPPED`), the folder's `.gitignore`, and
  the caller's gitignore-style `excludes`;
- from a pipeline's own code (`guarded=True`) also `NEVER_SHIPPED`: rayops' state, data and
  model files, key and credential files, and the project's `.gitignore`. Those are matched on
  their own, so no exclude or .gitignore line (`!.env`) can bring them back.

No Airflow and no Ray here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import stat
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_rayops.hooks.ray_jobs_api import RayJobsClient

ALWAYS_SKIPPED = (
    "__pycache__/", "*.py[cod]", ".git/", ".hg/", ".svn/", ".venv/", "venv/", ".tox/", ".nox/", ".mypy_cache/",
    ".pytest_cache/", ".ruff_cache/", ".ipynb_checkpoints/", "node_modules/", ".DS_Store",
)  # fmt: skip
NEVER_SHIPPED = (
    # rayops' own state (the embedded head's token, the local MLflow store, artifacts)
    ".rayops/",
    # data and model files: they belong in storage, not in code
    "*.parquet", "*.csv", "*.tsv", "*.jsonl", "*.feather", "*.arrow", "*.avro", "*.orc", "*.npy", "*.npz",
    "*.pt", "*.pth", "*.ckpt", "*.safetensors", "*.onnx", "*.h5", "*.pkl", "*.pickle", "*.joblib",
    "*.db", "*.sqlite", "*.sqlite3", "*.tfstate", "*.tfstate.*",
    # keys and credentials
    ".env", ".env.*", "*.env", "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.kdbx", "*.keystore",
    ".netrc", ".pypirc", ".npmrc", ".pgpass", ".git-credentials", ".dockercfg", ".docker/", ".ssh/", ".aws/",
    ".kube/", ".gnupg/", "kubeconfig", "*.kubeconfig", "id_rsa*", "id_ecdsa*", "id_ed25519*", "id_dsa*",
    "credentials", "credentials.*", "*credentials*.json", "*-key.json", "*_key.json", "service-account*.json",
    "secrets/", "secrets.*", "*.secret", "*.secrets",
)  # fmt: skip
"""gitignore patterns never packed from a pipeline's code, whatever its excludes or .gitignore say."""

RAY_PACKAGE_LIMIT = 500 * 1024 * 1024  # below Ray's GCS_STORAGE_MAX_SIZE (512 MiB): it refuses more
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say: the zip depends on content alone
MIB = 1024 * 1024


class CodeNotShippable(ValueError):
    """The code cannot be packed: missing, unreadable, or too large; the message names the path."""


class CodeTooLarge(CodeNotShippable):
    """The files to ship add up to more than the cap; the message names the biggest ones."""


@dataclasses.dataclass(frozen=True)
class CodePackage:
    """One package ready to upload: `uri` is the name Ray knows it by, `data` its bytes."""

    label: str
    uri: str
    data: bytes
    files: int
    size: int  # bytes before compression

    @property
    def zipped_size(self) -> int:
        return len(self.data)

    def describe(self) -> str:
        return f"{self.label}: {self.files} files, {kib(self.size)} ({kib(self.zipped_size)} zipped)"


def kib(size: int) -> str:
    return f"{size / 1024:.1f} KiB" if size < MIB else f"{size / MIB:.1f} MiB"


def _spec(lines: Sequence[str]):
    import pathspec  # a dependency of Airflow's core as well as ours

    return pathspec.GitIgnoreSpec.from_lines(lines)


def _gitignore(folder: Path) -> list[str]:
    path = folder / ".gitignore"
    if not path.is_file() or path.is_symlink():
        return []
    return path.read_text(errors="replace").splitlines()


def code_files(
    path: Path, *, excludes: Sequence[str] = (), guarded: bool = False, project_dir: Path | None = None
) -> list[tuple[str, Path]]:
    """(name inside the package, file) for every regular file under `path` that would ship, sorted.

    `path` may be a folder (its files, named relative to it) or one file. `guarded`: a
    pipeline's own code, where `NEVER_SHIPPED` applies first and the `project_dir`'s .gitignore
    too. CodeNotShippable when `path` is missing or unreadable."""
    try:
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            raise CodeNotShippable(f"{path}: no such file or folder to ship (symlinks are not followed)")
        never = _spec(NEVER_SHIPPED) if guarded else None
        if path.is_file():
            return [] if never is not None and never.match_file(path.name) else [(path.name, path)]
        skipped = _spec([*ALWAYS_SKIPPED, *excludes, *_gitignore(path)])
        project = _spec(_gitignore(project_dir)) if guarded and project_dir is not None else None
        base = path.relative_to(project_dir) if project is not None and project_dir is not None else None

        def left_out(rel: str) -> bool:
            if never is not None and never.match_file(rel):
                return True
            if project is not None and base is not None and project.match_file(f"{base.as_posix()}/{rel}"):
                return True
            return skipped.match_file(rel)

        found = []
        for root, dirs, files in os.walk(path, followlinks=False):
            here = Path(root)
            rel_root = here.relative_to(path)
            dirs[:] = sorted(d for d in dirs if not (here / d).is_symlink() and not left_out(f"{(rel_root / d).as_posix()}/"))
            for name in sorted(files):
                rel = (rel_root / name).as_posix()
                mode = (here / name).lstat().st_mode
                if stat.S_ISREG(mode) and not left_out(rel):
                    found.append((rel, here / name))
        return found
    except OSError as exc:
        raise CodeNotShippable(f"cannot read the code to ship under {path}: {exc}") from None


def check_size(files: Sequence[tuple[str, Path]], *, label: str, max_bytes: int, fix: str) -> int:
    """The files' total size; CodeTooLarge naming the three biggest when it is over `max_bytes`."""
    sizes = [(p.stat().st_size, rel) for rel, p in files]
    total = sum(size for size, _ in sizes)
    if total > max_bytes:
        biggest = ", ".join(f"{rel} ({kib(size)})" for size, rel in sorted(sizes, reverse=True)[:3])
        raise CodeTooLarge(
            f"{label} would ship {kib(total)} in {len(sizes)} files, over the {kib(max_bytes)} cap; biggest: {biggest}. {fix}"
        )
    return total


def pack(files: Sequence[tuple[str, Path]], *, label: str, prefix: str = "") -> CodePackage:
    """A zip of `files`, each stored as `prefix + name`, named by the hash of its files."""
    buffer = io.BytesIO()
    digest = hashlib.sha256()
    size = 0
    try:
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for rel, path in sorted(files):
                data = path.read_bytes()
                mode = 0o755 if path.stat().st_mode & stat.S_IXUSR else 0o644
                size += len(data)
                info = zipfile.ZipInfo(prefix + rel, date_time=_FIXED_TIME)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = mode << 16
                archive.writestr(info, data)
                digest.update(f"{prefix}{rel}\0{mode:o}\0{len(data)}\0".encode() + data)
    except OSError as exc:
        raise CodeNotShippable(f"cannot read the code to ship ({label}): {exc}") from None
    return CodePackage(
        label=label, uri=f"gcs://_ray_pkg_{digest.hexdigest()[:32]}.zip", data=buffer.getvalue(), files=len(files), size=size
    )


def pack_module(
    path: Path,
    *,
    label: str,
    excludes: Sequence[str] = (),
    guarded: bool = False,
    project_dir: Path | None = None,
    max_bytes: int = RAY_PACKAGE_LIMIT,
    fix: str = "Leave files out with runtime_env excludes.",
) -> CodePackage:
    """A `py_modules` package: the folder (or single .py file) stored under its own name, so
    the folder Ray unpacks it into goes on the job's PYTHONPATH and `import <name>` finds it."""
    files = code_files(path, excludes=excludes, guarded=guarded, project_dir=project_dir)
    check_size(files, label=label, max_bytes=max_bytes, fix=fix)
    return pack(files, label=label, prefix="" if path.is_file() else f"{path.name}/")


def pack_working_dir(path: Path, *, label: str, excludes: Sequence[str] = ()) -> CodePackage:
    """A `working_dir` package: the folder's contents at the top, as the job's current folder."""
    files = code_files(path, excludes=excludes)
    check_size(files, label=label, max_bytes=RAY_PACKAGE_LIMIT, fix="Leave files out with runtime_env excludes.")
    return pack(files, label=label)


def package_file(path: Path, *, label: str) -> CodePackage:
    """A package the user built (a .whl for py_modules, a .zip for either), sent as it is, named as
    Ray's client names it: a wheel by its file name (pip needs it), a zip by its content's hash."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CodeNotShippable(f"cannot read {path}: {exc}") from None
    if path.suffix == ".whl":
        uri = f"gcs://{path.name}"
    elif path.suffix == ".zip":
        uri = f"gcs://_ray_pkg_{hashlib.sha1(data).hexdigest()}.zip"
    else:
        raise CodeNotShippable(f"{path}: a file to ship must be a .whl or a .zip (or give its folder)")
    return CodePackage(label=label, uri=uri, data=data, files=1, size=len(data))


def upload(client: RayJobsClient, package: CodePackage) -> bool:
    """Make sure the cluster holds `package`; True when it had to be sent (False: it was there)."""
    if client.package_exists(package.uri):
        return False
    client.upload_package(package.uri, package.data)
    return True
