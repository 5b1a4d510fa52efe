"""Packing code for a Ray job the way Ray's own client does, without Ray (backends/code_package.py)."""

from __future__ import annotations

import io
import os
import time
import zipfile

import pytest

from airflow_provider_rayops.backends import code_package
from airflow_provider_rayops.hooks.ray_jobs_api import JobStatus


def _names(package: code_package.CodePackage) -> list[str]:
    return zipfile.ZipFile(io.BytesIO(package.data)).namelist()


@pytest.fixture
def module(tmp_path):
    pkg = tmp_path / "myloops"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "loop.py").write_text("def train(config):\n    return 42\n")
    (pkg / "sub" / "util.py").write_text("X = 1\n")
    (pkg / "vocab.txt").write_text("a\nb\n")  # a resource the code reads: shipped
    return pkg


def test_a_pipelines_data_keys_and_state_never_ship_whatever_its_gitignore_or_excludes_say(module):
    for name in (".env", "id_rsa", "server.pem", "train.parquet", "model.pt", "gcp-sa-key.json", ".pgpass", "secrets/db.yaml"):
        (module / name).parent.mkdir(exist_ok=True)
        (module / name).write_text("secret or data")
    for folder in (".git", ".rayops", ".ssh", "__pycache__"):
        (module / folder).mkdir()
        (module / folder / "inside").write_text("x")
    (module / "outside.py").symlink_to(module.parent / "elsewhere.py")
    (module.parent / "elsewhere.py").write_text("print('outside')")
    os.mkfifo(module / "pipe")  # reading it would block the worker: only regular files are packed
    (module / ".gitignore").write_text("!.env\n!*.pem\n!.rayops/\n")
    package = code_package.pack_module(module, label="myloops", excludes=["!*.parquet"], guarded=True)
    assert _names(package) == [
        "myloops/.gitignore", "myloops/__init__.py", "myloops/loop.py", "myloops/sub/util.py", "myloops/vocab.txt",
    ]  # fmt: skip


def test_the_projects_gitignore_applies_to_a_pipelines_module(module):
    (module.parent / ".gitignore").write_text("myloops/vocab.txt\n")
    package = code_package.pack_module(module, label="myloops", guarded=True, project_dir=module.parent)
    assert "myloops/vocab.txt" not in _names(package)


def test_a_plain_working_dir_ships_what_rays_own_client_would(tmp_path):
    """A DAG author's own runtime_env: their data files travel (as with Ray's client); caches do not."""
    (tmp_path / "main.py").write_text("print(1)")
    (tmp_path / "lookup.csv").write_text("a,b\n")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    assert _names(code_package.pack_working_dir(tmp_path, label="w")) == ["lookup.csv", "main.py"]


def test_missing_code_is_refused_naming_the_path(tmp_path):
    with pytest.raises(code_package.CodeNotShippable, match="no such file or folder to ship"):
        code_package.pack_module(tmp_path / "gone", label="gone")


def test_a_wheel_or_zip_is_sent_as_it_is(tmp_path):
    wheel = tmp_path / "mylib-1.0-py3-none-any.whl"
    wheel.write_bytes(b"PK-not-really")
    assert code_package.package_file(wheel, label="w").uri == "gcs://mylib-1.0-py3-none-any.whl"
    archive = tmp_path / "code.zip"
    archive.write_bytes(b"PK")
    assert code_package.package_file(archive, label="z").uri.startswith("gcs://_ray_pkg_")
    (tmp_path / "code.tar").write_bytes(b"tar")
    with pytest.raises(code_package.CodeNotShippable, match=r"must be a \.whl or a \.zip"):
        code_package.package_file(tmp_path / "code.tar", label="t")


def test_the_same_files_give_the_same_uri_and_a_change_gives_another(module):
    first = code_package.pack_module(module, label="myloops")
    time.sleep(0.01)
    (module / "loop.py").touch()  # a newer mtime, same content
    assert code_package.pack_module(module, label="myloops").uri == first.uri
    (module / "loop.py").write_text("def train(config):\n    return 43\n")
    assert code_package.pack_module(module, label="myloops").uri != first.uri
    assert first.uri.startswith("gcs://_ray_pkg_") and first.uri.endswith(".zip")


def test_a_single_module_file_is_packed_at_the_top(tmp_path):
    (tmp_path / "myloop.py").write_text("X = 1\n")
    assert _names(code_package.pack_module(tmp_path / "myloop.py", label="myloop")) == ["myloop.py"]


def test_code_over_the_cap_is_refused_naming_the_biggest_files(module):
    (module / "weights.bin").write_bytes(b"\0" * 300_000)
    with pytest.raises(code_package.CodeTooLarge) as refused:
        code_package.pack_module(module, label="module myloops", max_bytes=100_000, fix="Raise code_max_mb.")
    message = str(refused.value)
    assert message.startswith("module myloops would ship 293.")
    assert "over the 97.7 KiB cap; biggest: weights.bin (293.0 KiB)" in message
    assert message.endswith("Raise code_max_mb.")


def test_a_local_working_dir_and_py_module_reach_the_job_without_rays_client(ray_head, tmp_path, module):
    """RayJobsClient packs and uploads local folders itself: an Airflow worker without Ray can ship code."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "main.py").write_text("import myloops.loop\nprint('shipped', myloops.loop.train({}))\n")
    client = ray_head.client()
    sid = "ship-" + str(time.time_ns())
    client.submit(
        submission_id=sid, entrypoint="python main.py", runtime_env={"working_dir": str(work), "py_modules": [str(module)]},
        entrypoint_num_cpus=0,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (info := client.get_job(sid)).status.is_terminal():
        assert time.monotonic() < deadline, info
        time.sleep(0.3)
    assert info.status is JobStatus.SUCCEEDED, client.get_logs(sid)
    assert "shipped 42" in client.get_logs(sid)
    # Uploaded once: the same folder is found on the cluster by its content's name.
    package = code_package.pack_module(module, label="myloops")
    assert client.package_exists(package.uri)
    assert code_package.upload(client, package) is False
