"""docker/*.Dockerfile, read statically (no Docker engine here): pinned bases that follow pyproject.toml's
pins, the provider installed with the right extras, a non-root user, no secrets copied in.

Pins are read from pyproject.toml at test time: a version bump that forgets a Dockerfile fails here.
"""

from __future__ import annotations

import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
AIRFLOW = DOCKER / "airflow.Dockerfile"
RAY = DOCKER / "ray.Dockerfile"


# --- a small Dockerfile reader -------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, COPY...
    args: str  # the rest, continuations joined
    line: int  # where it starts


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order. Comment lines (also inside a continuation) and parser directives are
    dropped; a trailing backslash joins the next line. Enough for these files: no heredocs, no
    custom escape character."""
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if not parts:
            start = number
        continued = line.endswith("\\")
        parts.append(line[:-1].strip() if continued else line)
        if not continued:
            keyword, _, args = " ".join(parts).partition(" ")
            instructions.append(Instruction(keyword.upper(), args.strip(), start))
            parts = []
    assert not parts, "the file ends inside a line continuation"
    return instructions


def arg_defaults(instructions: list[Instruction]) -> dict[str, str | None]:
    """Every ARG and its default (None: declared without one); a later default wins."""
    found: dict[str, str | None] = {}
    for ins in instructions:
        if ins.keyword == "ARG":
            name, eq, default = ins.args.partition("=")
            if eq or name not in found:
                found[name.strip()] = default.strip().strip('"') if eq else None
    return found


def substitute(text: str, args: dict[str, str | None]) -> str:
    """${NAME} and $NAME replaced by ARG defaults; an ARG without one stays, unresolved."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        default = args.get(name)
        return default if default is not None else match.group(0)

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, text)


@dataclass(frozen=True)
class Image:
    repository: str
    tag: str | None
    digest: str | None


def base_images(instructions: list[Instruction]) -> list[Image]:
    """The FROM images, with the ARG defaults declared before them substituted."""
    images = []
    for i, ins in enumerate(instructions):
        if ins.keyword != "FROM":
            continue
        words = [w for w in ins.args.split() if not w.startswith("--")]
        ref = substitute(words[0], arg_defaults(instructions[:i]))
        assert "$" not in ref, f"line {ins.line}: FROM {ins.args} leaves {ref!r} unresolved: give the ARG a pinned default"
        name, _, digest = ref.partition("@")
        last = name.rsplit("/", 1)[-1]
        tag = last.partition(":")[2] or None
        repository = name[: len(name) - len(tag) - 1] if tag else name
        images.append(Image(repository, tag, digest or None))
    return images


def split_commands(script: str) -> list[str]:
    """A shell line split at && and ; outside quotes (python -c "a; b" stays whole)."""
    commands, current, quote, i = [], "", "", 0
    while i < len(script):
        ch = script[i]
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif script.startswith("&&", i) or ch == ";":
            commands.append(current)
            current = ""
            i += 2 if ch == "&" else 1
            continue
        current += ch
        i += 1
    commands.append(current)
    return [c.strip() for c in commands if c.strip()]


def run_commands(instructions: list[Instruction]) -> list[str]:
    """Each shell command of every RUN."""
    return [c for ins in instructions if ins.keyword == "RUN" for c in split_commands(ins.args)]


def pip_installs(instructions: list[Instruction]) -> list[list[str]]:
    """The words of every `pip install` command, ARG defaults substituted."""
    args = arg_defaults(instructions)
    return [
        shlex.split(substitute(command, args)) for command in run_commands(instructions) if re.search(r"\bpip install\b", command)
    ]


def copy_sources(instructions: list[Instruction]) -> list[str]:
    sources = []
    for ins in instructions:
        if ins.keyword in ("COPY", "ADD"):
            words = [w for w in shlex.split(ins.args) if not w.startswith("--")]
            sources += words[:-1]
    return sources


def last_user(instructions: list[Instruction]) -> str:
    users = [ins.args for ins in instructions if ins.keyword == "USER"]
    assert users, "no USER instruction: the image would run as its base's user, which may be root"
    return users[-1]


def labels(instructions: list[Instruction]) -> dict[str, str]:
    found: dict[str, str] = {}
    for ins in instructions:
        if ins.keyword == "LABEL":
            for word in shlex.split(ins.args):
                key, _, value = word.partition("=")
                found[key] = value
    return found


# --- pins from pyproject.toml --------------------------------------------------------------------


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def pinned(name: str) -> str:
    """The exact version the `test` extra pins for `name` (e.g. apache-airflow==3.3.2 -> 3.3.2)."""
    for requirement in project()["project"]["optional-dependencies"]["test"]:
        match = re.fullmatch(rf"{re.escape(name)}(\[[^\]]*\])?==([0-9][0-9.]*)", requirement)
        if match:
            return match.group(2)
    raise AssertionError(f"pyproject.toml's test extra pins no {name}==<version>")


def python_tag() -> str:
    """The Python the project is typed and tested for (tool.mypy.python_version), e.g. 3.11."""
    return project()["tool"]["mypy"]["python_version"]


def parsed(path: Path) -> list[Instruction]:
    return parse_dockerfile(path.read_text())


DOCKERFILES = [AIRFLOW, RAY]


def test_reader_joins_continuations_and_drops_comments():
    instructions = parse_dockerfile("# syntax=docker/dockerfile:1\nARG A=1\nRUN a \\\n  # note\n  && b\nUSER 5\n")
    assert [(i.keyword, i.args, i.line) for i in instructions] == [("ARG", "A=1", 2), ("RUN", "a && b", 3), ("USER", "5", 6)]
    assert split_commands("""a && python -c "x; y" && b 'c && d'; e""") == ["a", 'python -c "x; y"', "b 'c && d'", "e"]


def test_the_old_single_dockerfile_is_gone():
    assert not (DOCKER / "Dockerfile").exists()
    assert sorted(p.name for p in DOCKER.glob("*.Dockerfile")) == ["airflow.Dockerfile", "ray.Dockerfile"]


# --- both images ---------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_every_base_image_is_pinned(path):
    for image in base_images(parsed(path)):
        if image.digest:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", image.digest), image
            continue
        assert image.tag, f"{image.repository} has neither tag nor digest (that is :latest)"
        assert image.tag != "latest" and "latest" not in image.tag.split("-"), image
        assert re.search(r"(^|[^0-9.])[0-9]+\.[0-9]+\.[0-9]+([^0-9.]|$)", image.tag), f"{image} names no exact version"


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_every_pip_install_skips_the_cache(path):
    installs = pip_installs(parsed(path))
    assert installs
    for words in installs:
        assert "--no-cache-dir" in words, " ".join(words)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_nothing_secret_is_copied_in(path):
    instructions = parsed(path)
    secret = re.compile(
        r"(^|/)(\.env(\..*)?|.*\.pem|.*\.key|id_rsa.*|\.ssh|\.kube|kubeconfig|\.aws|\.netrc|credentials.*|secrets?)(/|$)"
    )
    for source in copy_sources(instructions):
        assert source not in (".", "./", "*"), f"{path.name} copies the whole build context"
        assert not secret.search(source), f"{path.name} copies {source}"
        assert not re.match(r"https?://", source), f"{path.name} ADDs a remote file: {source}"
    for ins in instructions:
        if ins.keyword in ("ENV", "ARG"):
            name = re.split(r"[= ]", ins.args, maxsplit=1)[0]
            assert not re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|CREDENTIAL", name, re.IGNORECASE), ins


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_the_build_context_is_fenced(path):
    """BuildKit reads <Dockerfile>.dockerignore: everything is left out but what the image copies."""
    ignore = path.with_name(path.name + ".dockerignore").read_text().split("\n")
    rules = [line.strip() for line in ignore if line.strip() and not line.startswith("#")]
    assert rules[0] == "*"
    reincluded = {rule[1:].rstrip("/") for rule in rules if rule.startswith("!")}
    copied = {source.rstrip("/") for source in copy_sources(parsed(path))}
    assert reincluded == copied
    for pattern in ("**/.env", "**/*.pem", "**/.kube/"):
        assert pattern in rules


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_labels_name_the_package_version(path):
    found = labels(parsed(path))
    assert found["org.opencontainers.image.version"] == project()["project"]["version"]
    assert found["org.opencontainers.image.licenses"] == project()["project"]["license"]
    assert found["org.opencontainers.image.title"] in ("rayops-airflow", "rayops-ray")


@pytest.mark.parametrize(("path", "expected"), [(AIRFLOW, {"airflow", "50000"}), (RAY, {"ray", "1000"})], ids=["airflow", "ray"])
def test_the_image_runs_as_its_non_root_user(path, expected):
    user = last_user(parsed(path))
    uid = user.partition(":")[0]
    assert uid not in ("root", "0")
    assert uid in expected


# --- the Airflow image ---------------------------------------------------------------------------


def test_airflow_base_is_the_pinned_airflow_on_the_project_python():
    (image,) = base_images(parsed(AIRFLOW))
    assert image.repository == "apache/airflow"
    assert image.tag == f"{pinned('apache-airflow')}-python{python_tag()}"


def test_airflow_image_installs_the_provider_with_kubernetes_and_monitor_keeping_airflow():
    instructions = parsed(AIRFLOW)
    (provider,) = [words for words in pip_installs(instructions) if any(w.startswith("/opt/rayops") for w in words)]
    target = next(w for w in provider if w.startswith("/opt/rayops"))
    extras = set(re.fullmatch(r"/opt/rayops\[([^\]]*)\]", target).group(1).split(","))
    assert {"kubernetes", "monitor"} <= extras
    assert "--no-deps" not in provider
    # The image's Airflow held as a constraint: the base image's AIRFLOW_VERSION written to the file given to pip.
    constraint = provider[provider.index("--constraint") + 1]
    assert any(
        re.search(r"apache-airflow==", command) and "AIRFLOW_VERSION" in command and constraint in command
        for command in run_commands(instructions)
    )


def test_airflow_image_carries_the_pipelines_and_points_rayops_at_them():
    instructions = parsed(AIRFLOW)
    copies = {tuple(shlex.split(i.args)[-2:]) for i in instructions if i.keyword == "COPY"}
    assert ("dags", "/opt/airflow/dags") in copies
    assert ("dag_configs", "/opt/airflow/dag_configs") in copies
    assert "RAYOPS_CONFIG_DIR=/opt/airflow/dag_configs" in [i.args for i in instructions if i.keyword == "ENV"]


# --- the Ray image -------------------------------------------------------------------------------


def test_ray_base_is_the_pinned_ray_on_an_exact_cuda():
    (image,) = base_images(parsed(RAY))
    assert image.repository == "rayproject/ray"
    match = re.fullmatch(r"([0-9.]+)-py([0-9]+)-(.+)", image.tag or "")
    assert match, image
    version, python, variant = match.groups()
    assert version == pinned("ray")
    assert python == python_tag().replace(".", "")
    assert re.fullmatch(r"cu[0-9]{3}", variant), f"{variant}: an exact CUDA tag (cu128), not gpu or cpu"


def test_ray_image_torch_is_the_pinned_torch_for_the_same_cuda():
    args = arg_defaults(parsed(RAY))
    assert args["TORCH_VERSION"] == pinned("torch")
    variant = base_images(parsed(RAY))[0].tag.rsplit("-", 1)[1]
    assert args["TORCH_INDEX_URL"] == f"https://download.pytorch.org/whl/{variant}"
    (torch_install,) = [w for w in pip_installs(parsed(RAY)) if any(x.startswith("torch==") for x in w)]
    assert f"torch=={pinned('torch')}" in torch_install
    assert torch_install[torch_install.index("--index-url") + 1] == args["TORCH_INDEX_URL"]


def test_ray_image_installs_the_jobs_extra_without_airflow_and_keeps_ray_and_torch():
    instructions = parsed(RAY)
    commands = run_commands(instructions)
    # The requirements file is pyproject.toml's jobs extra plus the package's own requirements but Airflow.
    (reader,) = [c for c in commands if "tomllib" in c]
    assert "['optional-dependencies']['jobs']" in reader
    assert "not r.startswith('apache-airflow')" in reader
    requirements = reader.rsplit(">", 1)[1].strip()
    installs = pip_installs(instructions)
    (jobs,) = [w for w in installs if "--requirement" in w]
    assert jobs[jobs.index("--requirement") + 1] == requirements
    constraint = jobs[jobs.index("--constraint") + 1]
    (writer,) = [c for c in commands if c.startswith("printf") and c.endswith(constraint)]
    assert '\'ray==%s\\ntorch==%s\\n\' "${RAY_VERSION}" "${TORCH_VERSION}"' in writer
    assert arg_defaults(instructions)["RAY_VERSION"] == pinned("ray")
    assert any("ray.__version__ == '${RAY_VERSION}'" in c for c in commands)  # the base image really has that Ray
    # The package itself: --no-deps, so pip never pulls Airflow into the Ray image.
    (package,) = [w for w in installs if "/opt/rayops" in w]
    assert "--no-deps" in package
    assert not [w for words in installs for w in words if w.startswith("apache-airflow")]
