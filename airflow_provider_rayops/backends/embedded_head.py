"""The embedded Ray head: one `ray start --head` on 127.0.0.1 that rayops starts on first use,
shares between processes and stops (the `local` backend runs jobs on it).

Everything lives in one state folder (the profile's `state_dir`, default `$RAYOPS_HOME/ray`,
RAYOPS_HOME defaulting to `~/.rayops`):

    auth_token   the dashboard's token, generated once, mode 0600
    head.json    the running head: pid, dashboard URL, GCS address, Ray temp dir
    head.lock    serialises starts and stops (concurrent tasks start one head, not several)
    head.log     what `ray start` printed
    leases/      one file per process sharing the head through `lease()` (test sessions)
    tmp/         Ray's temp dir (sessions, logs); under /tmp/rayops-<hash> when the state
                 folder's path is too long for Unix socket paths (about 107 bytes)

"Reuse" means: if head.json names a head whose dashboard accepts our token, use it. The head
is `ray start --head --block` in a session of its own, so it outlives the task that started
it; `stop()` (or `rayops head stop`) ends it.

Ray's processes all bind 127.0.0.1: Ray turns `--node-ip-address=127.0.0.1` into the
machine's address unless multi-node clusters are off (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0,
the flag Ray uses for single-node laptops), which a local head is by definition.

The token reaches Ray's processes as a file path (RAY_AUTH_TOKEN_PATH), not as the token
itself, so a job that prints its environment does not print the token. Every job driver
inherits the head's environment, and the head inherits it from whichever process started it
first, so it is built from an allowlist (`HEAD_ENV_NAMES`, `HEAD_ENV_PREFIXES`, and the
profile's `env` for more): Airflow's settings and secrets, cloud credentials and proxies
stay out. What a job needs (storage and MLflow credentials) reaches it per job, from
Airflow connections, in its runtime_env.

The state folder, Ray's temp folder and every folder created on the way are 0700 and must
belong to this user (a folder someone else made under /tmp is refused, not used). No Airflow
import here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tenacity import Retrying, retry_if_exception_type, retry_if_result, stop_after_delay, wait_fixed

from airflow_provider_rayops.config.compute import env_listed
from airflow_provider_rayops.config.home import rayops_home
from airflow_provider_rayops.hooks.ray_jobs_api import BackendNotAvailable, RayEndpoint

STATE_FILE = "head.json"
TOKEN_FILE = "auth_token"
LOCK_FILE = "head.lock"
LOG_FILE = "head.log"
LEASES_DIR = "leases"
# Ray puts sockets at <temp>/session_<date>_<time>_<usec>_<pid>/sockets/<name>: about 68
# bytes after the temp dir, and a Unix socket path must stay under ~107.
MAX_TEMP_DIR_CHARS = 36
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 45.0
# Generous: on a loaded 2-core machine the dashboard can take seconds to answer.
PROBE_TIMEOUT_S = 10.0
START_ATTEMPTS = 2
# After SIGKILL: waiting for the process group to go, then for the reap.
KILL_WAIT_S = 5.0
# `ray start` writes the GCS address here once the node is fully up (after the dashboard
# already answers); a head stopped before that point hangs 30 s draining.
CLUSTER_ADDRESS_FILE = "ray_current_cluster"

# What the head (and so every job driver) may inherit from the process that starts it.
HEAD_ENV_NAMES = frozenset(
    {
        "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
        "PATH", "PYTHONPATH", "VIRTUAL_ENV", "LD_LIBRARY_PATH",
        "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
        "CUDA_VISIBLE_DEVICES", "CUDA_HOME", "RAYOPS_HOME",
        "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    }
)  # fmt: skip
HEAD_ENV_PREFIXES = ("LC_", "RAY_", "NCCL_", "NVIDIA_", "TORCH_")
# Ray settings that are secrets or would point the head elsewhere: never inherited.
HEAD_ENV_REFUSED = frozenset({"RAY_AUTH_TOKEN", "RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"})

# Heads started by this process, kept so they are reaped (no zombie) when stopped from here.
_CHILDREN: dict[int, subprocess.Popen] = {}


def worst_case_lock_hold_s(*, start: float = START_TIMEOUT_S, stop: float = STOP_TIMEOUT_S, probe: float = PROBE_TIMEOUT_S,
                           attempts: int = START_ATTEMPTS, kill: float = KILL_WAIT_S) -> float:  # fmt: skip
    """The longest `ensure_head` can hold the lock: probe the recorded head, wait for a slow one of
    ours, stop it, then start a new one (each try: wait for it, probe, kill a failed start)."""
    return probe + (start + probe) + (stop + 2 * kill) + attempts * (start + probe + 2 * kill)


def default_state_dir() -> Path:
    return rayops_home() / "ray"


@dataclasses.dataclass(frozen=True)
class HeadState:
    """What head.json records about the running embedded head."""

    pid: int
    dashboard_url: str
    gcs_address: str | None
    temp_dir: str
    num_cpus: int
    num_gpus: int | None
    started_at: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HeadState:
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


class EmbeddedHead:
    """The embedded Ray head of one state folder (see the module docstring for what lives there).

    :param num_cpus: CPUs the head offers to Ray (default: every core of this machine).
    :param num_gpus: GPUs it offers (default: what Ray detects).
    :param object_store_mb: its object store's memory in MiB (default: what Ray picks).
    :param env: more environment variables it inherits: names, or prefixes ending in `*`.
    :param python: the interpreter whose Ray runs the head and its jobs (default: this one, which
        has rayops; another is a cluster that may lack it, as tests of code shipping need).
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        num_cpus: int | None = None,
        num_gpus: int | None = None,
        object_store_mb: int | None = None,
        env: Sequence[str] = (),
        python: str | None = None,
    ) -> None:
        self.state_dir = state_dir.expanduser().absolute()
        self.num_cpus = num_cpus
        self.num_gpus = num_gpus
        self.object_store_mb = object_store_mb
        self.env = tuple(env)
        self.python = python or sys.executable

    @property
    def token_path(self) -> Path:
        return self.state_dir / TOKEN_FILE

    @property
    def state_path(self) -> Path:
        return self.state_dir / STATE_FILE

    @property
    def log_path(self) -> Path:
        return self.state_dir / LOG_FILE

    # Instance attributes, so a test can shrink them together; the lock wait follows from them.
    start_timeout_s = START_TIMEOUT_S
    stop_timeout_s = STOP_TIMEOUT_S
    probe_timeout_s = PROBE_TIMEOUT_S
    kill_wait_s = KILL_WAIT_S

    @property
    def lock_timeout_s(self) -> float:
        """Longer than any holder can keep the lock, so a waiter never gives up on a healthy one."""
        hold = worst_case_lock_hold_s(
            start=self.start_timeout_s, stop=self.stop_timeout_s, probe=self.probe_timeout_s, kill=self.kill_wait_s
        )
        return hold + 30.0

    # -- where to submit --------------------------------------------------------------------

    def endpoint(self) -> RayEndpoint:
        """The dashboard and token of the running head, started first if none answers."""
        state = self.ensure_head()
        return RayEndpoint(dashboard_url=state.dashboard_url, token=self._read_token())

    def recorded_endpoint(self) -> RayEndpoint:
        """The head head.json records, without probing or starting anything."""
        state = self.read_state()
        token = self._read_token()
        if state is None or token is None:
            raise BackendNotAvailable(
                f"no embedded Ray head is recorded in {self.state_dir}; it starts when a task submits a job"
            )
        return RayEndpoint(dashboard_url=state.dashboard_url, token=token)

    # -- lifecycle -----------------------------------------------------------------------

    def ensure_head(self) -> HeadState:
        """The running head, started if none answers. Safe to call from concurrent processes."""
        state = self.running()
        if state is not None:
            return state
        with self._locked():
            state = self.read_state()
            if state is not None:
                if self._answers(state.dashboard_url):
                    return state
                # Our process but silent: a loaded machine or a head still starting. Replacing
                # it would kill the jobs of every task using it, so give it time first.
                if _is_our_head(state.pid, state.temp_dir) and self._wait_answers(state.dashboard_url):
                    return state
                self._terminate(state)
                self.state_path.unlink(missing_ok=True)
            return self._start()

    def running(self) -> HeadState | None:
        """The recorded head if it answers with our token, else None."""
        state = self.read_state()
        if state is not None and self._answers(state.dashboard_url):
            return state
        return None

    def stop(self) -> bool:
        """Stop the head this state folder records; False when none was recorded."""
        with self._locked():
            return self._stop_locked()

    @contextlib.contextmanager
    def lease(self) -> Iterator[HeadState]:
        """Use the head for the `with` block; afterwards stop it unless another live process holds a lease.

        For processes that share one state folder and each want the head gone when the last
        of them is done (concurrent test sessions, a demo script). Leases are files under
        `leases/` named `<pid>-<process start time>`, so a lease of a dead process whose pid the
        system gave to another one does not count.
        """
        leases = self.state_dir / LEASES_DIR
        mine = leases / lease_name(os.getpid())
        with self._locked():
            private_dir(leases)
            mine.touch()
        try:
            yield self.ensure_head()
        finally:
            with self._locked():
                mine.unlink(missing_ok=True)
                holders = []
                for lease in leases.iterdir():
                    if lease_is_live(lease.name):
                        holders.append(lease)
                    else:
                        lease.unlink(missing_ok=True)
                if not holders:
                    self._stop_locked()

    def _stop_locked(self) -> bool:
        state = self.read_state()
        if state is None:
            return False
        self._terminate(state)
        self.state_path.unlink(missing_ok=True)
        return True

    def read_state(self) -> HeadState | None:
        try:
            return HeadState.from_json(json.loads(self.state_path.read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    # -- internals -----------------------------------------------------------------------

    def _read_token(self) -> str | None:
        try:
            return self.token_path.read_text().strip() or None
        except FileNotFoundError:
            return None

    def _ensure_token(self) -> str:
        token = self._read_token()
        if token is None:
            fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
            token = self._read_token()
            assert token
        if self.token_path.stat().st_mode & 0o077:
            os.chmod(self.token_path, 0o600)
        return token

    def _answers(self, dashboard_url: str, path: str = "/api/version") -> bool:
        token = self._read_token()
        if token is None:
            return False
        return _probe(dashboard_url + path, token, timeout=self.probe_timeout_s) == 200

    def _wait_answers(self, dashboard_url: str) -> bool:
        return bool(poll(lambda: self._answers(dashboard_url), timeout_s=self.start_timeout_s, every_s=1.0))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        private_dir(self.state_dir)
        with open(self.state_dir / LOCK_FILE, "a+") as lock:
            take = Retrying(
                retry=retry_if_exception_type(BlockingIOError),
                stop=stop_after_delay(self.lock_timeout_s),
                wait=wait_fixed(0.2),
                retry_error_callback=lambda _: _raise(
                    BackendNotAvailable(f"another process holds {lock.name} for over {self.lock_timeout_s:.0f}s")
                ),
            )
            take(fcntl.flock, lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _temp_dir(self) -> Path:
        inside = self.state_dir / "tmp"
        if len(str(inside)) <= MAX_TEMP_DIR_CHARS:
            return inside
        digest = hashlib.sha1(str(self.state_dir).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"rayops-{digest}"

    def _head_env(self) -> dict[str, str]:
        extra = self.env
        env = {
            name: value
            for name, value in os.environ.items()
            if name not in HEAD_ENV_REFUSED
            and (name in HEAD_ENV_NAMES or name.startswith(HEAD_ENV_PREFIXES) or env_listed(name, extra))
        }
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN_PATH"] = str(self.token_path)
        env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        env["RAY_USAGE_STATS_ENABLED"] = "0"
        # Job entrypoints such as `python -m airflow_provider_rayops.jobs.x` must find the head's
        # interpreter (by default the one with rayops installed), not whatever python comes first.
        env["PATH"] = os.path.dirname(self.python) + os.pathsep + env.get("PATH", "")
        return env

    def _start(self, *, attempts: int = START_ATTEMPTS) -> HeadState:
        self._ensure_token()
        temp_dir = self._temp_dir()
        private_dir(temp_dir)
        num_cpus = self.num_cpus or os.cpu_count() or 1
        last_error: BackendNotAvailable | None = None
        for _ in range(attempts):
            # Free ports picked here can be taken before Ray binds them; a retry picks others.
            dashboard_port, client_port, agent_port = _free_ports(3)
            cmd = [
                _ray_executable(self.python),
                "start",
                "--head",
                "--block",
                "--node-ip-address=127.0.0.1",
                "--dashboard-host=127.0.0.1",
                "--port=0",
                f"--dashboard-port={dashboard_port}",
                f"--ray-client-server-port={client_port}",
                f"--dashboard-agent-listen-port={agent_port}",
                f"--num-cpus={num_cpus}",
                f"--temp-dir={temp_dir}",
                "--disable-usage-stats",
                "--include-dashboard=true",
            ]
            if self.num_gpus is not None:
                cmd.append(f"--num-gpus={self.num_gpus}")
            if self.object_store_mb is not None:
                cmd.append(f"--object-store-memory={self.object_store_mb * 2**20}")
            dashboard_url = f"http://127.0.0.1:{dashboard_port}"
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            (temp_dir / CLUSTER_ADDRESS_FILE).unlink(missing_ok=True)
            with open(self.log_path, "ab") as log:
                proc = subprocess.Popen(
                    cmd,
                    env=self._head_env(),
                    cwd=self.state_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            _CHILDREN[proc.pid] = proc
            try:
                gcs_address = self._wait_ready(proc, dashboard_url, temp_dir, log_offset)
            except BackendNotAvailable as exc:
                last_error = exc
                _kill_group(proc.pid)
                _reap(proc.pid)
                continue
            state = HeadState(
                pid=proc.pid,
                dashboard_url=dashboard_url,
                gcs_address=gcs_address,
                temp_dir=str(temp_dir),
                num_cpus=num_cpus,
                num_gpus=self.num_gpus,
                started_at=time.time(),
            )
            tmp = self.state_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(dataclasses.asdict(state), indent=2))
            tmp.replace(self.state_path)
            return state
        assert last_error is not None
        raise last_error

    def _wait_ready(self, proc: subprocess.Popen, dashboard_url: str, temp_dir: Path, log_offset: int) -> str:
        """Wait until the node is fully started and the Jobs API takes our token; returns the GCS address."""

        def ready() -> str | None:
            code = proc.poll()
            if code is not None:
                raise BackendNotAvailable(
                    f"the embedded Ray head exited with code {code} while starting; "
                    f"{self.log_path} says:\n{self._log_tail(log_offset)}"
                )
            gcs_address = _read_gcs_address(temp_dir)
            # /api/jobs/ answers only once the job module is up: then the head takes jobs.
            return gcs_address if gcs_address and self._answers(dashboard_url, "/api/jobs/") else None

        gcs_address = poll(ready, timeout_s=self.start_timeout_s, every_s=0.5)
        if gcs_address:
            return gcs_address
        raise BackendNotAvailable(
            f"the embedded Ray head did not answer at {dashboard_url} within {self.start_timeout_s:.0f}s; "
            f"{self.log_path} says:\n{self._log_tail(log_offset)}"
        )

    def _log_tail(self, offset: int, lines: int = 20) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                text = f.read().decode(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"

    def _terminate(self, state: HeadState) -> None:
        """End the recorded head's process group: SIGTERM (Ray drains and stops its children), then SIGKILL."""
        pid = state.pid
        # A child of ours keeps its pid until reaped, so it is the head whatever /proc says; one
        # that already exited is a zombie with no command line and must still be reaped.
        if pid not in _CHILDREN and not _is_our_head(pid, state.temp_dir):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        poll(lambda: _gone(pid), timeout_s=self.stop_timeout_s, every_s=0.2)
        _kill_group(pid)
        poll(lambda: _gone(pid), timeout_s=self.kill_wait_s, every_s=0.05)


def private_dir(path: Path) -> Path:
    """`path` as a folder only this user can enter: created (with any missing parents) 0700,
    tightened to 0700 if it exists, refused if it is a symlink or belongs to someone else."""
    missing = []
    probe = path
    while not os.path.lexists(probe):
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)
            os.chmod(folder, 0o700)  # mkdir's mode is cut by the umask
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise BackendNotAvailable(
            f"{path} is {'a symlink' if stat.S_ISLNK(info.st_mode) else 'not a folder'}; refusing to keep Ray's state there"
        )
    if info.st_uid != os.geteuid():
        raise BackendNotAvailable(
            f"{path} belongs to uid {info.st_uid}, not to this user (uid {os.geteuid()}): someone else could "
            "read the token or Ray's sockets there; remove it, or set the local profile's state_dir elsewhere"
        )
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def _process_start(pid: int) -> str | None:
    """When the process started (clock ticks since boot, from /proc): with the pid, it names one process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def lease_name(pid: int) -> str:
    return f"{pid}-{_process_start(pid) or 'unknown'}"


def lease_is_live(name: str) -> bool:
    """Whether the process a lease file names is still the one that wrote it."""
    pid, _, started = name.partition("-")
    if not pid.isdigit() or not _alive(int(pid)):
        return False
    return started == (_process_start(int(pid)) or "unknown")


def _probe(url: str, token: str, *, timeout: float = PROBE_TIMEOUT_S) -> int | None:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (OSError, ValueError):
        return None


def _free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _ray_executable(python: str) -> str:
    beside = Path(python).with_name("ray")
    if beside.exists():
        return str(beside)
    found = shutil.which("ray")
    if found is None:
        raise BackendNotAvailable("the `ray` command is not installed beside this Python; install ray[default]")
    return found


def _read_gcs_address(temp_dir: Path) -> str | None:
    try:
        return (temp_dir / CLUSTER_ADDRESS_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


def _alive(pid: int) -> bool:
    _reap(pid)
    try:
        with open(f"/proc/{pid}/stat") as f:
            zombie = f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    if zombie:
        # It died after the reap above: reap it now, or a child of ours stays a zombie that
        # answers signals (seen under load: a stopped head's pid still "existed" 15 s later).
        _reap(pid)
    return not zombie


def _gone(pid: int) -> bool:
    """Whether `pid` has ended and, if it is a child of ours, been reaped. A zombie child still
    answers signals, and cannot be reaped until every thread of it has exited: under load that
    is seconds after its main thread shows as a zombie."""
    if pid in _CHILDREN:
        _reap(pid)
        return pid not in _CHILDREN
    return not _alive(pid)


def _reap(pid: int) -> None:
    proc = _CHILDREN.get(pid)
    if proc is not None:
        if proc.poll() is not None:
            _CHILDREN.pop(pid, None)
        return
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    poll(lambda: _gone(pgid), timeout_s=KILL_WAIT_S, every_s=0.1)


def _is_our_head(pid: int, temp_dir: str) -> bool:
    """Whether `pid` is still the `ray start` we launched (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return False
    except OSError:
        return _alive(pid)
    return f"--temp-dir={temp_dir}".encode() in cmdline and b"start" in cmdline


T = TypeVar("T")


def poll(check: Callable[[], T], *, timeout_s: float, every_s: float) -> T:
    """`check()` every `every_s` seconds until it returns something truthy or `timeout_s` runs
    out; its last result either way. An exception from `check` ends the wait at once."""
    waiting: Retrying = Retrying(
        retry=retry_if_result(lambda result: not result),
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(every_s),
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else None,
    )
    return waiting(check)


def _raise(exc: BaseException) -> Any:
    raise exc
