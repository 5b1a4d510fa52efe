"""The platform's limits on pipeline YAML: which ${VARS} expand, where data is read and written,
which modules a training loop may come from (defaults.yaml's `security:` section)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from airflow_provider_rayops import cli
from airflow_provider_rayops.config.cache import load_config_dir_cached

from .conftest import MINIMAL, ROOT, errors_of, load

SECRET = "fernet-key-do-not-leak-7f3a"


def add_security(config_dir: Path, text: str) -> None:
    defaults = config_dir / "defaults.yaml"
    defaults.write_text(defaults.read_text() + "\nsecurity:\n" + text)


# -- ${VAR} ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "HOME"])
def test_a_variable_outside_the_allowlist_is_refused_and_never_read(write, name):
    path = write("p.yaml", MINIMAL + f"description: ${{{name}:-fallback}}\n")
    assert errors_of(path, env={name: SECRET}) == [
        f"{path}:5:1: description: ${{{name}}} cannot be expanded: only variables named RAYOPS_* may be expanded in "
        f"pipeline configs; a platform admin can add {name} to security.env_names in defaults.yaml"
    ]


def test_the_platform_can_allow_more_names_and_prefixes(write, config_dir):
    add_security(config_dir, "  env_names: [DATA_BUCKET]\n  env_prefixes: [TEAM_]\n  source_roots: [s3://lake/]\n")
    path = write("p.yaml", MINIMAL.replace("file://data/churn.parquet", "s3://${DATA_BUCKET}/${TEAM_PREFIX}/c.parquet"))
    loaded = load(path, env={"DATA_BUCKET": "lake", "TEAM_PREFIX": "raw"})
    assert loaded.spec.data.source == "s3://lake/raw/c.parquet"
    # setting env_prefixes replaces the default RAYOPS_
    path = write("q.yaml", MINIMAL.replace("churn", "q") + "description: ${RAYOPS_X}\n")
    assert "only variables named TEAM_*, DATA_BUCKET may be expanded" in errors_of(path, env={"RAYOPS_X": "x"})[0]


def test_an_expanded_value_is_never_echoed_in_an_error(write):
    path = write("p.yaml", MINIMAL + "retries: ${RAYOPS_RETRIES}\ncompute: ${RAYOPS_PROFILE}\n")
    errors = errors_of(path, env={"RAYOPS_RETRIES": SECRET, "RAYOPS_PROFILE": SECRET + "-profile"})
    assert errors == [
        f"{path}:5:1: retries: expected a valid integer, unable to parse string as an integer, found the value of "
        "${RAYOPS_RETRIES} (not shown)",
        f"{path}:6:1: compute: unknown compute profile ${{RAYOPS_PROFILE}}; expected one of: dev-cluster, kuberay-gpu, local",
    ]


def test_a_refused_variable_never_reaches_the_parse_cache(write, config_dir, tmp_path):
    write("p.yaml", MINIMAL + "description: ${AWS_SECRET_ACCESS_KEY:-none}\n")
    result = load_config_dir_cached(config_dir, cache_dir=tmp_path / "cache", env={"AWS_SECRET_ACCESS_KEY": SECRET})
    assert list(result.errors) == [str(config_dir / "p.yaml")]
    cache_text = "".join(f.read_text() for f in (tmp_path / "cache").iterdir())
    assert "AWS_SECRET_ACCESS_KEY" in cache_text and SECRET not in cache_text


def test_a_pipeline_file_cannot_widen_the_policy(write):
    path = write("p.yaml", MINIMAL + "security:\n  env_names: [AIRFLOW__CORE__FERNET_KEY]\n")
    assert errors_of(path) == [
        f"{path}:5:1: security: security settings belong in defaults.yaml (the platform team's file); "
        "a pipeline cannot change them"
    ]


def test_the_security_section_is_taken_literally(write, config_dir):
    add_security(config_dir, "  env_names: ['${RAYOPS_WIDEN}']\n")
    path = write("p.yaml", MINIMAL)
    [error] = errors_of(path, env={"RAYOPS_WIDEN": "HOME"})
    assert error.startswith(f"{config_dir / 'defaults.yaml'}:")
    assert error.endswith("security: the security section is taken literally: ${...} is not expanded here")


def test_a_malformed_security_section_is_located_in_defaults(write, config_dir):
    add_security(config_dir, "  source_root: [s3://lake/]\n")
    path = write("p.yaml", MINIMAL)
    [error] = errors_of(path)
    assert error.endswith("security.source_root: unknown key 'source_root'; did you mean 'source_roots'?")
    assert error.startswith(f"{config_dir / 'defaults.yaml'}:")


# -- where data is read and written ----------------------------------------------------------------


@pytest.mark.parametrize(
    "source, needed",
    [
        ("file://../../../../etc/passwd", "file:///etc/"),
        ("file:///etc/shadow", "file:///etc/"),
        ("s3://other-bucket/data.parquet", "s3://other-bucket/"),
    ],
)
def test_a_source_outside_the_allowed_roots_is_refused_naming_the_root_needed(write, config_dir, source, needed):
    path = write("p.yaml", MINIMAL.replace("file://data/churn.parquet", source))
    project = config_dir.parent.resolve()
    [error] = errors_of(path)
    assert error.startswith(f"{path}:3:3: data.source: data.source ")
    assert f"is outside the allowed roots (file://{project}/, file://{project}/.rayops/artifacts/)" in error
    assert error.endswith(f"adding a root that contains it (e.g. {needed}) to security.source_roots in defaults.yaml")


def test_a_symlink_out_of_the_project_does_not_count_as_inside(write, config_dir):
    (config_dir.parent / "data").symlink_to("/etc")
    path = write("p.yaml", MINIMAL.replace("data/churn.parquet", "data/passwd"))
    [error] = errors_of(path)
    assert "data.source file:///etc/passwd is outside the allowed roots" in error


def test_sources_in_the_storage_roots_bucket_and_in_policy_roots_are_allowed(write, config_dir):
    (config_dir / "defaults.yaml").write_text(
        "storage: {root: 's3://ml-artifacts/rayops'}\n"
        "compute_profiles: {local: {backend: local}}\n"
        "security: {source_roots: ['s3://lake/curated/']}\n"
    )
    same_bucket = write("a.yaml", MINIMAL.replace("file://data/churn.parquet", "s3://ml-artifacts/exports/c.parquet"))
    assert load(same_bucket).source_roots == (
        f"file://{config_dir.parent.resolve()}/",
        "s3://ml-artifacts/",
        "s3://lake/curated/",
    )
    load(write("b.yaml", MINIMAL.replace("file://data/churn.parquet", "s3://lake/curated/c.parquet").replace("churn", "b")))
    refused = write("c.yaml", MINIMAL.replace("file://data/churn.parquet", "s3://lake/raw/c.parquet").replace("churn", "c"))
    assert "s3://lake/raw/c.parquet is outside the allowed roots" in errors_of(refused)[0]


def test_storage_outside_the_project_and_the_platform_root_is_refused(write, config_dir):
    path = write("p.yaml", MINIMAL + "storage: {root: 'file:///var/tmp/elsewhere'}\n")
    [error] = errors_of(path)
    project = config_dir.parent.resolve()
    assert error == (
        f"{path}:5:11: storage.root: storage.root file:///var/tmp/elsewhere is outside the allowed roots "
        f"(file://{project}/, file://{project}/.rayops/artifacts/); a platform admin can allow it by adding a root "
        "that contains it (e.g. file:///var/tmp/) to security.storage_roots in defaults.yaml"
    )
    add_security(config_dir, "  storage_roots: ['file:///var/tmp/']\n")
    assert load(path).spec.storage.root == "file:///var/tmp/elsewhere"


# -- which modules a training loop may come from ---------------------------------------------------------

TRAIN = "train:\n  entrypoint: {}\n"


@pytest.mark.parametrize("entrypoint", ["os:system", "subprocess:run", "builtins:exec", "this:s"])
def test_standard_library_entrypoints_are_refused(write, entrypoint):
    path = write("p.yaml", MINIMAL + TRAIN.format(entrypoint))
    [error] = errors_of(path)
    module = entrypoint.split(":")[0]
    assert error.startswith(f"{path}:6:3: train.entrypoint: module '{module}' is part of Python's standard library")


def test_validate_refuses_before_importing_anything(tmp_path):
    folder = tmp_path / "dag_configs"
    folder.mkdir()
    (folder / "defaults.yaml").write_text((ROOT / "dag_configs" / "defaults.yaml").read_text())
    (folder / "p.yaml").write_text(MINIMAL + TRAIN.format("this:s"))
    rayops = Path(sys.executable).with_name("rayops")
    proc = subprocess.run(
        [rayops, "validate"], capture_output=True, text=True, cwd=tmp_path, env={"PATH": os.environ["PATH"]}, timeout=60
    )
    assert proc.returncode == 1
    assert "module 'this' is part of Python's standard library" in proc.stderr
    assert "Zen of Python" not in proc.stdout + proc.stderr  # `import this` prints it


def test_an_installed_package_needs_the_platforms_allowlist(write, config_dir):
    path = write("p.yaml", MINIMAL + TRAIN.format("yaml.loops:train"))
    [error] = errors_of(path)
    assert "module 'yaml.loops' is neither a built-in loop (rayops.builtin:...) nor a file in the project folder" in error
    add_security(config_dir, "  entrypoint_modules: [yaml]\n")
    assert load(path).spec.train.entrypoint == "yaml.loops:train"


def test_allowlisted_prefixes_match_whole_package_names(write, config_dir):
    add_security(config_dir, "  entrypoint_modules: [acme.ml]\n")
    assert load(write("a.yaml", MINIMAL + TRAIN.format("acme.ml.loops:train"))).spec.train is not None
    assert (
        "is neither a built-in loop"
        in errors_of(write("b.yaml", MINIMAL.replace("churn", "b") + TRAIN.format("acme.mlx:train")))[0]
    )


def test_a_module_of_the_project_folder_is_allowed(write, config_dir):
    loops = config_dir.parent / "team_loops"
    loops.mkdir()
    (loops / "__init__.py").write_text("")
    (loops / "tabular.py").write_text("def train(config):\n    pass\n")
    assert load(write("p.yaml", MINIMAL + TRAIN.format("team_loops.tabular:train"))).spec.train is not None


def test_a_project_file_named_like_an_installed_package_is_refused(write, config_dir):
    (config_dir.parent / "yaml.py").write_text("def train(config):\n    pass\n")
    [error] = errors_of(write("p.yaml", MINIMAL + TRAIN.format("yaml:train")))
    assert "module 'yaml' is an installed package" in error


def test_only_defaults_may_widen_what_jobs_inherit_from_the_head(write, config_dir):
    path = write("p.yaml", MINIMAL + "compute_profiles:\n  local: {backend: local, env: [AWS_*]}\n")
    assert errors_of(path) == [
        f"{path}:6:27: compute_profiles.local.env: a compute profile's env belongs in defaults.yaml (the platform "
        "team's file); a pipeline cannot widen what jobs inherit"
    ]
    defaults = config_dir / "defaults.yaml"
    defaults.write_text(defaults.read_text().replace("    backend: local\n", "    backend: local\n    env: ['*']\n", 1))
    [error] = errors_of(write("q.yaml", MINIMAL.replace("churn", "q")))
    assert error.endswith(
        "compute_profiles.local.env[0]: expected a variable name or a prefix ending in * (e.g. HF_*), never a bare *, found '*'"
    )


# -- what every job of a pipeline is given: runtime_env, and the pipeline's own code ------------------


def test_job_environment_variables_come_from_the_platforms_allowlist(write, config_dir):
    path = write("p.yaml", MINIMAL + "runtime_env:\n  env_vars: {OMP_NUM_THREADS: 2, HF_HUB_OFFLINE: 1, PYTHONPATH: /x}\n")
    assert errors_of(path) == [
        f"{path}:6:34: runtime_env.env_vars.HF_HUB_OFFLINE: HF_HUB_OFFLINE is not among the variables jobs may be "
        "given (OMP_NUM_THREADS, MKL_NUM_THREADS, OPENBLAS_NUM_THREADS, TOKENIZERS_PARALLELISM, NCCL_DEBUG, "
        "PYTORCH_CUDA_ALLOC_CONF, CUBLAS_WORKSPACE_CONFIG); a platform admin can add it to security.job_env_vars in defaults.yaml",
        f"{path}:6:53: runtime_env.env_vars.PYTHONPATH: PYTHONPATH cannot be set from a pipeline: it decides which "
        "code runs or carries what rayops hands a job itself (credentials come from Airflow connections)",
    ]
    add_security(config_dir, "  job_env_vars: [OMP_NUM_THREADS, HF_*, AWS_*]\n")
    assert (
        "AWS_SECRET_ACCESS_KEY cannot be set from a pipeline"
        in errors_of(write("q.yaml", MINIMAL.replace("churn", "q") + "runtime_env:\n  env_vars: {AWS_SECRET_ACCESS_KEY: x}\n"))[0]
    )  # the platform cannot open what rayops itself hands jobs
    loaded = load(write("r.yaml", MINIMAL.replace("churn", "r") + "runtime_env:\n  env_vars: {HF_HUB_OFFLINE: 1}\n"))
    assert loaded.spec.runtime_env.env_vars == {"HF_HUB_OFFLINE": 1}


def test_pip_takes_requirements_not_options(write):
    path = write("p.yaml", MINIMAL + "runtime_env:\n  pip: ['lightgbm>=4', '--index-url=http://evil']\n")
    [error] = errors_of(path)
    assert error.startswith(f"{path}:6:24: runtime_env.pip[1]: '--index-url=http://evil' is not a requirement (a name,")
    assert "\n" not in error


def _big_loop(project: Path) -> None:
    loops = project / "team_loops"
    loops.mkdir()
    (loops / "__init__.py").write_text("")
    (loops / "tabular.py").write_text("def train(config):\n    pass\n")
    (loops / "weights.bin").write_bytes(b"\0" * 60_000)
    (loops / "train.parquet").write_bytes(b"\0" * 900_000)  # data is never shipped: not counted


def test_only_defaults_may_raise_the_cap_on_shipped_code(write):
    path = write("p.yaml", MINIMAL + "compute_profiles:\n  local: {backend: local, code_max_mb: 500}\n")
    assert errors_of(path) == [
        f"{path}:6:27: compute_profiles.local.code_max_mb: a compute profile's code_max_mb belongs in defaults.yaml "
        "(the platform team's file); a pipeline cannot raise the cap on the code it ships"
    ]


def test_pip_refuses_addresses(write):
    path = write("p.yaml", MINIMAL + "runtime_env:\n  pip: ['lib @ https://example.com/lib.whl']\n")
    [error] = errors_of(path)
    assert "names a URL; the cluster installs requirements from its package index by name and version" in error


def test_rayops_validate_refuses_a_pipeline_module_over_the_profiles_cap(config_dir, capsys):
    """Checked by `rayops validate` (and again when a job is submitted), not while Airflow parses:
    it reads the module's files, which the parse cache does not watch."""

    def _validate(config_dir: Path, *args: str) -> subprocess.CompletedProcess:
        """`rayops --config-dir <dir> validate <args>`, in this process (as the console script calls it)."""
        capsys.readouterr()
        code = cli.main(["--config-dir", str(config_dir), "validate", *args])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    _big_loop(config_dir.parent)
    defaults = config_dir / "defaults.yaml"
    defaults.write_text(defaults.read_text().replace("    backend: local\n", "    backend: local\n    code_max_mb: 0.05\n", 1))
    path = config_dir / "p.yaml"
    path.write_text(MINIMAL.lstrip("\n") + TRAIN.format("team_loops.tabular:train"))
    proc = _validate(config_dir, "--no-import-check")
    assert proc.returncode == 1
    [error] = proc.stderr.splitlines()
    assert error.startswith(
        f"{path}:6:3: train.entrypoint: module team_loops of the pipeline would ship 58.6 KiB in 3 files, "
        "over the 51.2 KiB cap; biggest: weights.bin (58.6 KiB)"
    )
    assert error.endswith(
        "Leave files out with runtime_env.excludes in the pipeline, or raise compute_profiles.local.code_max_mb in defaults.yaml."
    )
    path.write_text(path.read_text() + "runtime_env: {excludes: ['*.bin']}\n")
    assert _validate(config_dir, "--no-import-check").returncode == 0
    # With code: image nothing is shipped, so nothing is capped (the cluster's image is checked instead).
    image = "compute: c\ntracking: {conn_id: mlflow_x}\ncompute_profiles:\n  c: {backend: ray, code: image}\n"
    path.write_text(MINIMAL.lstrip("\n") + image + TRAIN.format("team_loops.tabular:train"))
    assert _validate(config_dir, "--no-import-check").returncode == 0


def test_a_loop_package_that_is_a_symlink_is_refused(write, config_dir, tmp_path):
    elsewhere = tmp_path / "elsewhere" / "team_loops"
    elsewhere.mkdir(parents=True)
    (elsewhere / "__init__.py").write_text("")
    (elsewhere / "tabular.py").write_text("def train(config):\n    pass\n")
    (config_dir.parent / "team_loops").symlink_to(elsewhere)
    [error] = errors_of(write("p.yaml", MINIMAL + TRAIN.format("team_loops.tabular:train")))
    assert "module 'team_loops.tabular' comes from a symlink in the project folder" in error
