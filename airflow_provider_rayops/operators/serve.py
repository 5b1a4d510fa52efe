"""DeployRayServeOperator: put a registered model version behind the pipeline's Ray Serve endpoint.

Deploys through the Serve REST API of the compute profile's cluster (the embedded local head, or
a Ray cluster by connection, with its token), as serving/rollout.py describes:

- nothing serves yet: the version and the router go up at 100%;
- the version serves already: nothing changes (a retry, or a run with no new version);
- without `canary`: the version is added, then takes all traffic at once;
- with `canary`: the version is added at weight 0, then takes each step's share (`steps`, e.g.
  10 -> 50 -> 100), holding each step `hold` (the task defers meanwhile: no worker slot is held)
  and judging it by the router's numbers for the version over the step: error rate, p99,
  request count. A breach puts the champion back at 100%, removes the version, and fails the
  task or skips what follows (`on_breach`). At the end the version is the endpoint's champion.

The deploy is recorded on the model version (`rayops.deploy.*` tags: outcome, endpoint, weights,
each step's numbers) and returned. The champion alias moves after this task (the factory puts
PromoteMLflowModelOperator after it), so the registry's champion is what serves.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.configuration import conf
from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException
from airflow.sdk.log import mask_secret

from airflow_provider_rayops import tag_names as names
from airflow_provider_rayops.backends import get_backend, parse_profile
from airflow_provider_rayops.backends.cluster_code import ClusterNotReady, JobCode, prepare_job_code
from airflow_provider_rayops.backends.code_package import CodeNotShippable
from airflow_provider_rayops.backends.kuberay import KubeRayBackend
from airflow_provider_rayops.backends.kuberay.manifests import LABEL_PIPELINE, service_name
from airflow_provider_rayops.backends.local import LocalBackend
from airflow_provider_rayops.config.schema import parse_duration
from airflow_provider_rayops.hooks.mlflow import MlflowHook
from airflow_provider_rayops.hooks.ray_jobs_api import RayJobsClient
from airflow_provider_rayops.hooks.ray_serve_api import RayServeClient
from airflow_provider_rayops.links.serve import XCOM_KEY, ServeEndpointLink
from airflow_provider_rayops.operators.job_spec import job_runtime_env, label_value
from airflow_provider_rayops.operators.mlflow_model import _now, _task_label, version_of
from airflow_provider_rayops.operators.ray_job import compute_profile
from airflow_provider_rayops.registry import aliases, version_tags
from airflow_provider_rayops.serving.rollout import Rollout, Serving, ServingTarget, judge, percent_weights
from airflow_provider_rayops.triggers.canary import CanaryHoldTrigger

if TYPE_CHECKING:
    from airflow.sdk import Context


# The rollback DAG's Param: the version to serve again (empty: the previous alias).
ROLLBACK_VERSION_PARAM = "version"
# XCom of a deploy that rolled back (a successful one returns the same dict).
OUTCOME_XCOM_KEY = "deploy"


class CanaryRolledBack(AirflowFailException):
    """The canary breached a limit and the champion serves again (`on_breach: fail`); not retried:
    a retry would deploy the same version again."""


class DeployRayServeOperator(BaseOperator):
    """Deploy `version` of `registered_model` to the pipeline's Serve endpoint (see the module doc).

    :param registered_model: the registered model name.
    :param version: the version number, or the register task's XCom dict (`register_task.output`).
    :param app: the endpoint's Serve application name; each version runs as `<app>--v<version>`.
    :param route_prefix: the endpoint's HTTP route.
    :param compute: the compute profile as a plain dict (`{"backend": "local"}`), or None for the
        Ray cluster of `ray_conn_id`.
    :param ray_conn_id: a `rayops_ray` connection (used when `compute` is None).
    :param mlflow_conn_id: a `rayops_mlflow` connection the replicas load the model with (None:
        the embedded local store).
    :param storage_conn_id: a `rayops_s3` connection for artifact stores the replicas read directly.
    :param runtime_env: the pipeline's runtime_env (pip, env_vars) for the replicas.
    :param replicas: `{min, max, num_cpus}` of each version's deployment.
    :param batch: `{max_batch_size, wait_ms}`.
    :param http_port: Serve's proxy port when this starts Serve.
    :param sticky_header: request header that keeps a caller on one version.
    :param canary: `{steps, hold, max_error_rate, max_p99_ms, min_requests, on_breach}`, or None.
    :param inference_log: `{uri, sample}`: each version writes that share of the rows it serves,
        with its predictions, as parquet parts under `uri` (serving/inference_log.py); None: no log.
    :param deferrable: defer during each canary step's hold (default: Airflow's default_deferrable).
    :param ready_timeout: seconds a change may take to be served (replicas loading the model).
    :param champion_alias: the registry alias of what serves (moved by a rollback; a deploy leaves
        it to PromoteMLflowModelOperator after it).
    :param previous_alias: the alias of the version a rollback returns to.
    :param challenger_alias: removed from a version whose canary rolled back (it is no candidate any more).

    Returns `{registered_model, version, endpoint, outcome: "serving" | "rolled_back" | "unchanged",
    weights, replaced_version, steps: [{percent, requests, errors, error_rate, p99_ms, breach}]}`.
    """

    template_fields: Sequence[str] = ("version",)
    operator_extra_links = (ServeEndpointLink(),)
    ui_color = "#fdf0d5"

    def __init__(
        self,
        *,
        registered_model: str,
        version: Any,
        app: str,
        route_prefix: str,
        compute: dict[str, Any] | None = None,
        ray_conn_id: str | None = None,
        mlflow_conn_id: str | None = None,
        storage_conn_id: str | None = None,
        runtime_env: dict[str, Any] | None = None,
        replicas: Mapping[str, Any] | None = None,
        batch: Mapping[str, Any] | None = None,
        http_port: int = 8000,
        sticky_header: str | None = None,
        canary: Mapping[str, Any] | None = None,
        inference_log: Mapping[str, Any] | None = None,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        ready_timeout: float = 600.0,
        champion_alias: str = "champion",
        previous_alias: str = "previous",
        challenger_alias: str = "challenger",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.champion_alias = champion_alias
        self.previous_alias = previous_alias
        self.challenger_alias = challenger_alias
        if ray_conn_id is not None and compute is not None:
            raise ValueError("give either ray_conn_id (a Ray cluster by connection) or compute (a profile), not both")
        self.registered_model = registered_model
        self.version = version
        self.app = app
        self.route_prefix = route_prefix
        self.compute = parse_profile(compute).model_dump(mode="json", exclude_none=True) if compute is not None else None
        self.ray_conn_id = ray_conn_id
        self.mlflow_conn_id = mlflow_conn_id
        self.storage_conn_id = storage_conn_id
        self.runtime_env = runtime_env
        self.replicas = dict(replicas or {})
        self.batch = dict(batch or {})
        self.http_port = http_port
        self.sticky_header = sticky_header or ""
        self.canary = dict(canary) if canary else None
        self.inference_log = dict(inference_log) if inference_log else None
        if self.canary is not None:
            steps = [float(s) for s in self.canary.get("steps") or [100]]
            if steps != sorted(set(steps)) or not all(0 < s <= 100 for s in steps) or steps[-1] != 100:
                raise ValueError(f"canary steps must be increasing percentages in (0, 100] ending at 100, found {steps}")
            self.canary["steps"] = steps
            self.canary["hold_s"] = parse_duration(str(self.canary.get("hold", "60s")))
            if self.canary.get("on_breach", "fail") not in ("fail", "skip"):
                raise ValueError(f"canary on_breach must be 'fail' or 'skip', found {self.canary.get('on_breach')!r}")
        self.deferrable = deferrable
        self.ready_timeout = ready_timeout

    # -- execution -----------------------------------------------------------------------

    def execute(self, context: Context) -> dict[str, Any]:
        number = version_of(self.version)
        rollout = self._rollout(with_code=True)
        context["ti"].xcom_push(key=XCOM_KEY, value=rollout.url())
        serving = rollout.current()
        if serving is None:
            self.log.info("%s serves nothing yet: deploying v%s at 100%%", self.app, number)
            return self._done(context, rollout, rollout.first_deploy(number), number, replaced=None, steps=[])
        if serving.versions == (number,):
            # A repeated deploy: the version stays, settings changed since (replicas, batching) apply.
            self.log.info("%s serves v%s already; sending its settings again", self.app, number)
            return self._result(rollout, rollout.refresh(serving), number, outcome="unchanged", replaced=None, steps=[])
        champion = serving.champion
        if champion == number:  # a rollback left another version next to it: it takes all traffic again
            return self._done(context, rollout, rollout.make_sole(serving, number), number, replaced=None, steps=[])
        self.log.info("%s serves %s (champion v%s); adding v%s", self.app, serving.weights, champion, number)
        serving = rollout.add(Serving(versions=(champion,), weights={champion: 1.0}, champion=champion), number)
        if self.canary is None:
            return self._done(context, rollout, rollout.make_sole(serving, number), number, replaced=champion, steps=[])
        with self._champion_back_on_error(rollout, champion, number):
            return self._step(context, rollout, serving, number, index=0, steps=[])

    def resume(self, context: Context, event: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """After a step's hold (deferred): judge it, then the next step or the end."""
        number = version_of(self.version)
        state = dict((event or {}).get("state") or {})
        if not {"index", "started", "champion", "steps"} <= set(state):
            raise AirflowFailException(f"the canary hold of v{number} came back without its step: {event!r}")
        # The same runtime_env as before the hold (shipped code included): Serve would otherwise rebuild every application.
        rollout = self._rollout(with_code=True)
        champion, expected = str(state["champion"]), {str(state["champion"]), number}
        now = rollout.current()
        if now is None or set(now.versions) != expected or now.champion != champion:
            # Someone rolled back or deployed meanwhile: what serves now is theirs, not ours to move.
            raise AirflowFailException(
                f"{self.app} changed during the canary hold of v{number}: it serves {now.weights if now else 'nothing'} "
                f"(champion v{now.champion if now else '-'}), not v{champion} and v{number}; the canary stops here"
            )
        with self._champion_back_on_error(rollout, champion, number):
            return self._judge(context, rollout, number, **state)

    def roll_back(self, *, to_version: str | None, by: str) -> dict[str, Any]:
        """Put `to_version` (default: the `previous` alias) back at 100% in one step (it is added
        next to what serves, and takes all traffic once ready), then swap the aliases: it becomes
        the champion, the version it replaced becomes `previous`."""
        client = MlflowHook(self.mlflow_conn_id).get_conn()
        name = self.registered_model
        if to_version is None:
            previous = aliases.version_by_alias(client, name, self.previous_alias)
            if previous is None:
                raise AirflowFailException(
                    f"{name} has no version with alias {self.previous_alias!r} to roll back to; name the version to serve"
                )
            to_version = str(previous.version)
        to_version = version_of(to_version)
        client.get_model_version(name, to_version)  # fails clearly for a version that does not exist
        rollout = self._rollout(with_code=True)
        serving = rollout.current()
        if serving is None:
            raise AirflowFailException(
                f"{self.app} serves nothing on {rollout.client.endpoint.dashboard_url}: nothing to roll back"
            )
        replaced = serving.champion if serving.champion != to_version else None
        if serving.versions != (to_version,):
            self.log.info("%s serves %s; putting v%s back at 100%%", self.app, serving.weights, to_version)
            if serving.champion != to_version:
                only = Serving(versions=(serving.champion,), weights={serving.champion: 1.0}, champion=serving.champion)
                serving = rollout.add(only, to_version)
            serving = rollout.make_sole(serving, to_version)
        moved = aliases.promote_to_champion(
            client,
            name,
            to_version,
            champion_alias=self.champion_alias,
            previous_alias=self.previous_alias,
            challenger_alias=None,
        )
        self.log.info(
            "%s v%s is %r again%s", name, to_version, self.champion_alias,
            f"; v{moved.previous} keeps {self.previous_alias!r}" if moved.previous else "",
        )  # fmt: skip
        return self._record(client, rollout, serving, to_version, outcome="serving", by=by, replaced=replaced, steps=[])

    # -- the canary ------------------------------------------------------------------------

    def _step(
        self, context: Context, rollout: Rollout, serving: Serving, number: str, *, index: int, steps: list[dict[str, Any]]
    ) -> dict[str, Any]:
        assert self.canary is not None
        percent = self.canary["steps"][index]
        serving = rollout.set_weights(serving, percent_weights(serving.champion, number, percent))
        started = time.time()
        self.log.info("v%s takes %g%% of %s's traffic; holding %.0f s", number, percent, self.app, self.canary["hold_s"])
        state: dict[str, Any] = {"index": index, "started": started, "champion": serving.champion, "steps": steps}
        if self.deferrable:
            # Airflow's trigger timeout backs up the hold (execution_timeout does not count deferred time).
            self.defer(
                trigger=CanaryHoldTrigger(until=started + self.canary["hold_s"], state=state),
                method_name="resume",
                timeout=dt.timedelta(seconds=self.canary["hold_s"] + 600),
            )
        time.sleep(self.canary["hold_s"])
        return self._judge(context, rollout, number, **state)

    def _judge(
        self,
        context: Context,
        rollout: Rollout,
        number: str,
        *,
        index: int,
        started: float,
        champion: str,
        steps: list[dict[str, Any]],
    ) -> dict[str, Any]:
        assert self.canary is not None
        percent = self.canary["steps"][index]
        serving = Serving(versions=(champion, number), weights=percent_weights(champion, number, percent), champion=champion)
        stats = rollout.stats(time.time() - started).get("versions", {}).get(number) or {}
        breach = judge(
            stats,
            max_error_rate=float(self.canary.get("max_error_rate", 0.01)),
            max_p99_ms=self.canary.get("max_p99_ms"),
            min_requests=int(self.canary.get("min_requests", 0)),
        )
        step = {
            "percent": percent,
            **{k: stats.get(k) for k in ("requests", "errors", "error_rate", "p50_ms", "p99_ms")},
            "breach": breach,
        }
        steps = [*steps, step]
        self.log.info("v%s at %g%%: %s", number, percent, json.dumps(step))
        if breach is not None:
            self.log.warning("v%s breached at %g%%: %s; v%s takes all traffic again", number, percent, breach, champion)
            back = rollout.make_sole(serving, champion)
            client = MlflowHook(self.mlflow_conn_id).get_conn()
            result = self._record(
                client, rollout, back, number, outcome="rolled_back", by=_task_label(context), replaced=None, steps=steps
            )
            context["ti"].xcom_push(key=OUTCOME_XCOM_KEY, value=result)  # the task ends without a return value
            aliases.clear_alias_if(client, self.registered_model, self.challenger_alias, number)
            message = f"{self.registered_model} v{number} rolled back at {percent:g}%: {breach}; v{champion} serves"
            if self.canary.get("on_breach", "fail") == "skip":
                raise AirflowSkipException(message)
            raise CanaryRolledBack(message)
        if index + 1 < len(self.canary["steps"]):
            return self._step(context, rollout, serving, number, index=index + 1, steps=steps)
        return self._done(context, rollout, rollout.make_sole(serving, number), number, replaced=champion, steps=steps)

    # -- internals -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _champion_back_on_error(self, rollout: Rollout, champion: str, number: str) -> Iterator[None]:
        """A canary step that fails for any other reason than its verdict (the endpoint or MLflow
        unreachable, a bug) puts the champion back at 100% first (best effort): a canary is never
        left with its share while nobody watches it. Deferral (TaskDeferred) is not an error."""
        try:
            yield
        except (AirflowSkipException, AirflowFailException):
            raise  # a verdict: the weights are already where it left them
        except Exception:
            self.log.exception("the canary of v%s failed; v%s takes all traffic again", number, champion)
            try:
                serving = rollout.current()
                if serving is not None and champion in serving.versions:
                    rollout.make_sole(serving, champion)
            except Exception as exc:  # what failed may be the endpoint itself: the error that matters is the first
                self.log.error("could not put v%s back at 100%%: %s: %s", champion, type(exc).__name__, exc)
            raise

    def _rollout(self, *, with_code: bool) -> Rollout:
        backend = get_backend(compute_profile(self.compute, self.ray_conn_id))
        if isinstance(backend, KubeRayBackend):
            return self._rollout_on_kuberay(backend)
        endpoint = backend.endpoint()
        if endpoint.token:
            mask_secret(endpoint.token)
        py_modules: tuple[str, ...] = ()
        if with_code:
            try:
                # The replicas import rayops' serving code: a bare cluster gets it shipped (code: auto).
                py_modules = prepare_job_code(
                    RayJobsClient(endpoint), backend.profile, JobCode(rayops=True), log=self.log.info
                ).py_modules
            except (ClusterNotReady, CodeNotShippable) as exc:
                raise AirflowFailException(str(exc)) from None
        runtime_env = job_runtime_env(
            self.runtime_env,
            py_modules=py_modules,
            storage_conn_id=self.storage_conn_id,
            with_mlflow=True,
            mlflow_conn_id=self.mlflow_conn_id,
        )
        target = ServingTarget(
            app=self.app,
            route_prefix=self.route_prefix,
            registered_model=self.registered_model,
            http_port=self.http_port,
            # The embedded head serves this machine only; a cluster's proxy must be reachable from Airflow and clients.
            http_host="127.0.0.1" if isinstance(backend, LocalBackend) else "0.0.0.0",
            batch=self.batch,
            replicas=self.replicas,
            sticky_header=self.sticky_header,
            inference_log=self.inference_log,
            runtime_env=runtime_env,
        )
        return Rollout(RayServeClient(endpoint), target, log=self.log.info, ready_timeout_s=self.ready_timeout)

    def _rollout_on_kuberay(self, backend: KubeRayBackend) -> Rollout:
        """The endpoint as a RayService (backends/kuberay/serve.py): its pods run the profile's image,
        so nothing is shipped, and the connections' credentials come from the profile's secret_env."""
        from airflow_provider_rayops.backends.kuberay.serve import RayServiceServe

        runtime_env = job_runtime_env(
            self.runtime_env,
            storage_conn_id=self.storage_conn_id,
            with_mlflow=True,
            mlflow_conn_id=self.mlflow_conn_id,
            credentials=False,
        )
        target = ServingTarget(
            app=self.app,
            route_prefix=self.route_prefix,
            registered_model=self.registered_model,
            http_port=self.http_port,
            http_host="0.0.0.0",  # inside the pod: the serve Service routes to it
            batch=self.batch,
            replicas=self.replicas,
            sticky_header=self.sticky_header,
            inference_log=self.inference_log,
            runtime_env=runtime_env,
        )
        client = RayServiceServe(backend, service_name(self.app), labels={LABEL_PIPELINE: label_value(self.app)})
        return Rollout(client, target, log=self.log.info, ready_timeout_s=self.ready_timeout)

    def _done(
        self,
        context: Context,
        rollout: Rollout,
        serving: Serving,
        number: str,
        *,
        replaced: str | None,
        steps: list[dict[str, Any]],
    ) -> dict[str, Any]:
        self.log.info("%s: v%s serves all traffic", self.app, number)
        client = MlflowHook(self.mlflow_conn_id).get_conn()
        return self._record(
            client, rollout, serving, number, outcome="serving", by=_task_label(context), replaced=replaced, steps=steps
        )

    def _record(
        self,
        client: Any,
        rollout: Rollout,
        serving: Serving,
        number: str,
        *,
        outcome: str,
        by: str,
        replaced: str | None,
        steps: list[dict[str, Any]],
    ) -> dict[str, Any]:
        result = self._result(rollout, serving, number, outcome=outcome, replaced=replaced, steps=steps)
        version_tags.set_version_tags(client, self.registered_model, number, {
            names.DEPLOY_OUTCOME: outcome,
            names.DEPLOYED_AT: _now(),
            names.DEPLOYED_BY: by,
            names.DEPLOY_ENDPOINT: result["endpoint"],
            names.DEPLOY_WEIGHTS: json.dumps(result["weights"], sort_keys=True),
            names.DEPLOY_STEPS: json.dumps(steps, sort_keys=True),
        })  # fmt: skip
        return result

    def _result(
        self, rollout: Rollout, serving: Serving, number: str, *, outcome: str, replaced: str | None, steps: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return {
            "registered_model": self.registered_model,
            "version": number,
            "endpoint": rollout.url(),
            "outcome": outcome,
            "weights": {v: round(100 * serving.share(v), 3) for v in serving.versions},
            "replaced_version": replaced,
            "steps": steps,
        }


class RollbackRayServeOperator(DeployRayServeOperator):
    """Put the `previous` version (or the run's `version` Param) back at 100% of the endpoint in
    one step, and swap the aliases (see `DeployRayServeOperator.roll_back`). What the factory's
    `<pipeline>__rollback` DAG runs; `rayops rollback PIPELINE` does the same from a shell."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.pop("version", None)
        kwargs.pop("canary", None)
        super().__init__(version=None, canary=None, **kwargs)

    def execute(self, context: Context) -> dict[str, Any]:
        wanted = str((context.get("params") or {}).get(ROLLBACK_VERSION_PARAM) or "").strip() or None
        return self.roll_back(to_version=wanted, by=_task_label(context))
