"""Moving a pipeline's endpoint from one model version to another through the Serve REST API.

What serves is read back from the cluster each time (the router application's user_config:
versions, weights, champion), so a retried or repeated deploy continues from what runs, and
every change is one PUT followed by a wait until the router reports it (`GET /-/healthz`):

    first deploy    the version and the router, at 100%
    add             a canary as its own application at weight 0, until it is ready
    weights         the split the router applies (a user_config change: no replica restarts)
    finish          the new version becomes the champion at 100%, then the old one's
                    application is removed (two PUTs: no request is routed to a version
                    being deleted)
    roll back       the champion back at 100%, then the canary removed

A request that a canary fails is answered by the champion (serving/app.py), so none of these
steps fails a client. No Airflow here: the deploy operator and `rayops rollback` drive it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from airflow_provider_rayops.hooks.ray_jobs_api import RayEndpoint
from airflow_provider_rayops.hooks.ray_serve_api import ServeNotAvailable
from airflow_provider_rayops.serving.config import (
    HEALTH_PATH,
    ROUTER,
    STATS_PATH,
    applications,
    replace_pipeline,
    version_app_name,
)

READY_TIMEOUT_S = 600.0
POLL_S = 0.5
# How long after a PUT an application's DEPLOY_FAILED may still be about the config before it.
STALE_STATUS_S = 10.0


class RolloutFailed(ServeNotAvailable):
    """A step could not complete (an application failed to deploy, or did not get ready in time)."""


@dataclasses.dataclass(frozen=True)
class ServingTarget:
    """Where and how a pipeline's endpoint runs (from its `deploy:` section and profile)."""

    app: str  # the router application's name; versions are `<app>--v<version>`
    route_prefix: str
    registered_model: str
    http_port: int = 8000
    http_host: str = "127.0.0.1"  # what Serve's proxies bind, when this starts Serve
    batch: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    replicas: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    limits: Mapping[str, int] = dataclasses.field(default_factory=dict)
    sticky_header: str = ""
    inference_log: Mapping[str, Any] | None = None  # {uri, sample}
    runtime_env: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)  # may hold credentials


@dataclasses.dataclass(frozen=True)
class Serving:
    """What the endpoint serves now."""

    versions: tuple[str, ...]
    weights: dict[str, float]
    champion: str

    def share(self, version: str) -> float:
        total = sum(self.weights.values())
        return self.weights.get(version, 0.0) / total if total else 0.0


def percent_weights(champion: str, canary: str, percent: float) -> dict[str, float]:
    return {champion: float(100 - percent), canary: float(percent)}


def judge(stats: Mapping[str, Any] | None, *, max_error_rate: float, max_p99_ms: float | None, min_requests: int) -> str | None:
    """Why a canary's step breaches (None: it holds). `stats` is the router's summary of the
    canary over the step (requests, errors, error_rate, p99_ms)."""
    stats = stats or {}
    requests = int(stats.get("requests") or 0)
    if requests < min_requests:
        return f"{requests} request(s) reached it during the step; canary.min_requests is {min_requests}"
    if not requests:
        return None
    errors = int(stats.get("errors") or 0)
    if errors / requests > max_error_rate:
        return f"error rate {errors / requests:.1%} ({errors} of {requests}) is over canary.max_error_rate {max_error_rate:.1%}"
    p99 = stats.get("p99_ms")
    if max_p99_ms is not None and p99 is not None and float(p99) > max_p99_ms:
        return f"p99 latency {float(p99):.1f} ms is over canary.max_p99_ms {max_p99_ms:g}"
    return None


class ServeClient(Protocol):
    """Where a rollout reads and writes the cluster's Serve config: the Serve REST API of a Ray
    cluster (hooks.ray_serve_api.RayServeClient) or a KubeRay RayService (backends/kuberay/serve.py)."""

    endpoint: RayEndpoint

    def details(self) -> dict[str, Any]: ...
    def put(self, config: Mapping[str, Any]) -> None: ...
    def proxy_url(self, port: int) -> str: ...


class Rollout:
    """The endpoint of one pipeline on one cluster."""

    def __init__(
        self,
        client: ServeClient,
        target: ServingTarget,
        *,
        log: Callable[[str], None] = print,
        ready_timeout_s: float = READY_TIMEOUT_S,
    ) -> None:
        self.client = client
        self.target = target
        self.log = log
        self.ready_timeout_s = ready_timeout_s

    # -- reading -----------------------------------------------------------------------------

    def current(self) -> Serving | None:
        """What the router serves (None: the pipeline has no endpoint on this cluster)."""
        app = self.client.details()["applications"].get(self.target.app)
        config = (app or {}).get("deployed_app_config") or {}
        for deployment in config.get("deployments") or []:
            if deployment.get("name") == ROUTER:
                user = deployment.get("user_config") or {}
                versions = tuple(str(v) for v in (user.get("versions") or {}))
                if not versions:
                    return None
                champion = str(user.get("champion") or versions[0])
                weights = {str(v): float(w) for v, w in (user.get("weights") or {champion: 1.0}).items()}
                return Serving(versions=versions, weights=weights, champion=champion)
        return None

    def url(self) -> str:
        """The endpoint: the proxy's port as Serve runs it (or will), the router's route prefix."""
        details = self.client.details()
        # Serve keeps the port it started with; before it runs, the port this will start it with.
        http = (details.get("http_options") or {}) if details["applications"] else {}
        port = int(http.get("port") or self.target.http_port)
        return self.client.proxy_url(port) + self.target.route_prefix.rstrip("/")

    def stats(self, window_s: float) -> dict[str, Any]:
        """The router's per-version summary of the last `window_s` seconds (GET /-/stats)."""
        return self._get(f"{STATS_PATH}?window_s={max(window_s, 0.001):.3f}").json()

    # -- changing --------------------------------------------------------------------------

    def first_deploy(self, version: str) -> Serving:
        return self._apply(Serving(versions=(version,), weights={version: 1.0}, champion=version), ready={version})

    def refresh(self, serving: Serving) -> Serving:
        """What serves, sent again: settings changed since (replicas, batching) take effect."""
        return self._apply(serving, ready={v for v, w in serving.weights.items() if w > 0})

    def add(self, serving: Serving, version: str) -> Serving:
        """`version` deployed next to what serves, at weight 0, until it is ready (what serves is
        not waited for: a rollback adds the version to go back to beside one that may be failing)."""
        versions = serving.versions if version in serving.versions else (*serving.versions, version)
        return self._apply(
            Serving(versions=versions, weights={**serving.weights, version: 0.0}, champion=serving.champion), ready={version}
        )

    def set_weights(self, serving: Serving, weights: Mapping[str, float]) -> Serving:
        moved = dataclasses.replace(serving, weights={v: float(weights.get(v, 0.0)) for v in serving.versions})
        return self._apply(moved, ready={v for v, w in moved.weights.items() if w > 0})

    def make_sole(self, serving: Serving, version: str) -> Serving:
        """`version` (already deployed and ready) takes all traffic as champion, then every other
        version's application is removed. Only `version` is waited for: the others may be failing."""
        moved = self._apply(
            Serving(
                versions=serving.versions, weights={v: 1.0 if v == version else 0.0 for v in serving.versions}, champion=version
            ),
            ready={version},
        )
        if moved.versions == (version,):
            return moved
        return self._apply(Serving(versions=(version,), weights={version: 1.0}, champion=version), ready={version})

    # -- internals -------------------------------------------------------------------------

    def _apply(self, serving: Serving, *, ready: set[str]) -> Serving:
        """PUT the pipeline's applications for `serving` (the cluster's others sent back as they
        run), then wait until the router reports `serving` with the versions in `ready` ready."""
        details = self.client.details()
        running = details["applications"]
        ours = applications(
            pipeline=self.target.app,
            registered_model=self.target.registered_model,
            weights={v: serving.weights.get(v, 0.0) for v in serving.versions},
            champion=serving.champion,
            route_prefix=self.target.route_prefix,
            batch=self.target.batch,
            replicas=self.target.replicas,
            limits=self.target.limits,
            sticky_header=self.target.sticky_header,
            runtime_env=self.target.runtime_env,
            inference_log=self.target.inference_log,
        )
        # Sent back: what others deployed by config and still want. Applications deployed from
        # Python (serve.run) have no config and a PUT leaves them alone; one being deleted stays deleted.
        current = [
            app["deployed_app_config"]
            for app in running.values()
            if app.get("deployed_app_config") and app.get("status") != "DELETING"
        ]
        http = details.get("http_options") if running else None
        http_options = (
            {"host": http.get("host"), "port": http.get("port")}
            if http
            else {"host": self.target.http_host, "port": self.target.http_port}
        )
        deployed_before = {name: app.get("last_deployed_time_s") for name, app in running.items()}
        started = time.monotonic()
        self.client.put({"http_options": http_options, "applications": replace_pipeline(current, self.target.app, ours)})
        self._wait(serving, ready=ready, deployed_before=deployed_before, put_at=started)
        self.log(
            f"{self.target.app} serves {serving.weights} (champion v{serving.champion}) after {time.monotonic() - started:.1f} s"
        )
        return serving

    def _wait(self, serving: Serving, *, ready: set[str], deployed_before: Mapping[str, Any], put_at: float) -> None:
        names = {self.target.app, *(version_app_name(self.target.app, v) for v in serving.versions)}
        needed = {self.target.app, *(version_app_name(self.target.app, v) for v in ready)}
        url = self.url()
        deadline = time.monotonic() + self.ready_timeout_s
        last = "no answer yet"
        while time.monotonic() < deadline:
            apps = self.client.details()["applications"]
            # A DEPLOY_FAILED from before this PUT is stale until Serve takes the new config up
            # (it changes last_deployed_time_s), or for a config it had already (then it is final).
            failed = {
                n: apps[n].get("message", "")
                for n in needed
                if apps.get(n, {}).get("status") == "DEPLOY_FAILED"
                and (apps[n].get("last_deployed_time_s") != deployed_before.get(n) or time.monotonic() - put_at > STALE_STATUS_S)
            }
            if failed:
                raise RolloutFailed(
                    "Serve could not deploy "
                    + "; ".join(f"{name}: {message.strip()[-1500:]}" for name, message in sorted(failed.items()))
                )
            # A version no longer served must be gone too: its replicas' resources are free again.
            leaving = sorted(n for n in apps if n.startswith(version_app_name(self.target.app, "")) and n not in names)
            up = all(apps.get(n, {}).get("status") == "RUNNING" for n in needed)
            if leaving:
                last = "removing " + ", ".join(f"{n} ({apps[n].get('status')})" for n in leaving)
            elif not up:
                last = "applications " + ", ".join(f"{n}: {apps.get(n, {}).get('status', 'absent')}" for n in sorted(needed))
            else:
                health = self._health(url)
                if health is not None:
                    reported = {str(v): float(w) for v, w in (health.get("weights") or {}).items()}
                    states = health.get("versions") or {}
                    if (
                        reported == serving.weights
                        and health.get("champion") == serving.champion
                        and all(states.get(v) == "ready" for v in ready)
                    ):
                        return
                    last = f"the router reports {health}"
            time.sleep(POLL_S)
        raise RolloutFailed(f"{self.target.app} did not reach {serving} within {self.ready_timeout_s:.0f} s: {last}")

    def _health(self, url: str) -> dict[str, Any] | None:
        import requests

        try:
            response = self._get(HEALTH_PATH, url=url)
            return response.json() if response.status_code in (200, 503) else None
        except (requests.RequestException, RolloutFailed, ValueError):
            return None  # the proxy is starting, or the router is (or not ours yet: not JSON)

    def _get(self, path: str, *, url: str | None = None) -> Any:
        import requests

        url = (url or self.url()) + path
        response = requests.get(url, timeout=10)
        if response.status_code >= 400 and response.status_code != 503:
            raise RolloutFailed(f"GET {url} answered HTTP {response.status_code}: {response.text[:300]}")
        return response
