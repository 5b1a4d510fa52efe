"""The tune stage (a Ray job): a hyperparameter search with Ray Tune around the train stage's loop.

    python -m airflow_provider_rayops.jobs.tune      # args in RAYOPS_JOB_ARGS (JSON)

Job arguments: every argument of the train job (jobs/train.py: snapshot_uri, entrypoint,
params, scaling, checkpoint, max_failures, mixed_precision, run_root, experiment, lineage,
run_key, run_name), plus

    search    the YAML `tune` section (config.schema.TuneSpec): search_space {param:
              {uniform|loguniform: [low, high]} | {randint: [low, high)} | {choice: [...]} |
              {grid: [...]}}, num_samples, max_concurrent, metric, mode (min|max),
              scheduler (asha|fifo), grace_period (epochs before ASHA may stop a trial)

Each trial is one Ray Train run of the same loop (`TorchTrainer`, the same scaling, DDP,
checkpoints and failure policy as the train job) with `params` overridden by the trial's
sample; its reports reach Tune through Ray's `TuneReportCallback`, and ASHA compares trials
on `metric` by epoch. Samples are drawn with a seeded generator (params.seed, default 0).

Storage under run_root: `tune/` is Tune's experiment folder, `trials/<trial_id>/` each trial's
Ray Train folder with its checkpoints (the last `checkpoint.keep`). A retry of the task
(same run_root) restores the search: finished trials stay finished, unfinished ones resume
from their checkpoints.

MLflow: one parent run per search (found again by run key, like the train job's run) with
the base params, the search settings and the lineage; one nested run per trial (tag
mlflow.parentRunId, found again by trial id) with the trial's params, its per-epoch metrics
and `rayops.trial_status` (completed, early_stopped or error). The best trial's model is
logged on the best trial's run, the same way the train job logs its model.

Result: the train job's keys for the best trial (mlflow_run_id is the best trial's run,
model_uri, checkpoint_uri, metrics, epochs_completed, resumed_from_epoch, experiment_id,
tracking_uri), plus parent_run_id, best_trial_id, best_config (the sampled params) and
trials: [{trial_id, mlflow_run_id, status, epochs, metric}].
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_rayops import storage
from airflow_provider_rayops import tag_names as names
from airflow_provider_rayops.config.schema import Distribution
from airflow_provider_rayops.jobs import builtin, contracts, loops, tracking
from airflow_provider_rayops.jobs import train as train_job
from airflow_provider_rayops.jobs.modeling.artifacts import MODEL_SPEC_FILE
from airflow_provider_rayops.jobs.modeling.checkpoints import load_checkpoint
from airflow_provider_rayops.jobs.modeling.features import FeatureEncoder
from airflow_provider_rayops.jobs.runtime import JobInputError, run_job

TUNE_RUN_NAME = "tune"
TRIALS_FOLDER = "trials"
# What the built-in loop reports, by task kind: a search on anything else would never see its metric.
_SHARED_METRICS = ("train_loss", "val_loss", "epoch_time_s", "samples_per_s")
BUILTIN_METRICS: dict[str, tuple[str, ...]] = {
    "classification": (*_SHARED_METRICS, "val_accuracy", "val_auc"),
    "regression": (*_SHARED_METRICS, "val_rmse", "val_mae", "val_r2"),
}
# Columns Tune adds to every reported row; the rest is what the loop reported.
_TUNE_COLUMNS = frozenset(
    {
        "timestamp",
        "checkpoint_dir_name",
        "checkpoint_path",
        "done",
        "training_iteration",
        "trial_id",
        "date",
        "time_this_iter_s",
        "time_total_s",
        "pid",
        "hostname",
        "node_ip",
        "time_since_restore",
        "iterations_since_restore",
        "experiment_tag",
        "should_checkpoint",
        "resumed_from_epoch",
    }
)


def search_space(space: Mapping[str, Distribution]) -> dict[str, Any]:
    """Ray Tune domains for the YAML search space."""
    from ray import tune

    out: dict[str, Any] = {}
    for name, dist in space.items():
        if dist.uniform is not None:
            out[name] = tune.uniform(*dist.uniform)
        elif dist.loguniform is not None:
            out[name] = tune.loguniform(*dist.loguniform)
        elif dist.randint is not None:
            out[name] = tune.randint(*dist.randint)
        elif dist.choice is not None:
            out[name] = tune.choice(list(dist.choice))
        elif dist.grid is not None:
            out[name] = tune.grid_search(list(dist.grid))
    return out


def trial_scheduler(search: Any, *, epochs: int) -> Any:
    """`asha`: stop weak trials early (after `grace_period` epochs, halving at each rung);
    `fifo`: run every trial to its last epoch."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if search.scheduler == "asha":
        return ASHAScheduler(time_attr="epoch", max_t=epochs, grace_period=search.grace_period, reduction_factor=2)
    return FIFOScheduler()


def check_search(spec: contracts.TuneArgs, entrypoint: loops.Entrypoint, params: Mapping[str, Any], *, task: str) -> None:
    """Refuse, before any trial runs, a search the built-in loop could not carry out on a snapshot of `task`."""
    if entrypoint.builtin is None:
        return
    for name, dist in spec.search.search_space.items():
        if name not in loops.TABULAR_MLP_DEFAULTS:
            raise JobInputError(
                f"search.search_space.{name}: not a parameter of {entrypoint.path}; it takes "
                f"{', '.join(sorted(loops.TABULAR_MLP_DEFAULTS))}"
            )
        for value in _corners(dist):
            try:
                entrypoint.check_task(entrypoint.resolve_params({**params, name: value}), task)
            except JobInputError as exc:
                raise JobInputError(f"search.search_space.{name} can sample {value!r}, which the loop refuses: {exc}") from None
    if spec.search.metric not in BUILTIN_METRICS[task]:
        raise JobInputError(
            f"search.metric={spec.search.metric!r}: {entrypoint.path} reports {', '.join(BUILTIN_METRICS[task])} "
            f"for a {task} snapshot"
        )
    epochs = int(params["epochs"])
    if spec.search.scheduler == "asha" and spec.search.grace_period > epochs:
        raise JobInputError(f"search.grace_period={spec.search.grace_period}: more than params.epochs={epochs}")


def _corners(dist: Distribution) -> list[Any]:
    for bounds in (dist.uniform, dist.loguniform):
        if bounds is not None:
            return list(bounds)
    if dist.randint is not None:
        return [dist.randint[0], dist.randint[1] - 1]
    return list(dist.choice or dist.grid or [])


def _trial(
    sample: dict[str, Any],
    *,
    loop: Any,
    base_config: dict[str, Any],
    datasets: dict[str, Any],
    trainer_options: dict[str, Any],
) -> None:
    """One Tune trial: a Ray Train run of the loop with the sampled params (runs in the trial actor)."""
    import ray.tune
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    params = {**base_config["params"], **sample}
    config = {**base_config, "params": params, "epochs": int(params.get("epochs", base_config["epochs"]))}
    fs, path = storage.filesystem(trainer_options["trials_uri"])
    TorchTrainer(
        loop,
        train_loop_config=config,
        scaling_config=ScalingConfig(**trainer_options["scaling"]),
        run_config=RunConfig(
            name=ray.tune.get_context().get_trial_id(),
            storage_path=path,
            storage_filesystem=fs,
            failure_config=FailureConfig(max_failures=trainer_options["max_failures"]),
            checkpoint_config=CheckpointConfig(num_to_keep=trainer_options["keep"]),
            # A Train V2 callback for the V2 RunConfig used at run time; mypy sees V1's RunConfig.
            callbacks=[TuneReportCallback()],  # type: ignore[list-item]
        ),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=[train_job.TRAIN_SPLIT]),
    ).fit()


@dataclass
class TrialOutcome:
    trial_id: str
    sample: dict[str, Any]
    params: dict[str, Any]
    history: list[dict[str, Any]]
    status: str  # completed | early_stopped | error
    error: str | None
    checkpoint_uri: str | None
    resumed_from_epoch: int | None

    @property
    def epochs(self) -> int:
        return int(self.history[-1]["epoch"]) if self.history else 0


def main(args: Mapping[str, Any] | contracts.TuneArgs) -> dict[str, Any]:
    spec = contracts.TuneArgs.parse(args)
    entrypoint = loops.resolve_entrypoint(spec.entrypoint)
    params = entrypoint.resolve_params(spec.params)
    snapshot = train_job.load_snapshot(spec.snapshot_uri)
    encoder = train_job.fit_encoder(snapshot)
    entrypoint.check_task(params, encoder.task)
    check_search(spec, entrypoint, params, task=encoder.task)
    run_root = storage.resolve_uri(spec.run_root)

    client = tracking.client()
    experiment_id = tracking.ensure_experiment(client, spec.experiment)
    lineage = tracking.lineage_tags(
        {
            **spec.lineage,
            "snapshot_uri": snapshot.uri,
            "snapshot_hash": snapshot.content_hash,
            "ray_job_id": tracking.ray_job_id(),
        }
    )
    key_text = spec.run_key or run_root
    with tracking.tracked_run(
        client,
        experiment_id=experiment_id,
        key=tracking.run_key(key_text),
        params={**params, **_search_settings(spec)},
        run_name=spec.run_name or (f"tune {spec.lineage['run_id']}" if spec.lineage.get("run_id") else None),
        tags={**lineage, names.RUN_KIND: "tune", names.RUN_ROOT: run_root, names.ENTRYPOINT: spec.entrypoint},
    ) as parent_id:
        trials = search(spec, entrypoint=entrypoint, params=params, snapshot=snapshot, encoder=encoder, run_root=run_root)
        result = log_search(
            client,
            spec=spec,
            trials=trials,
            experiment_id=experiment_id,
            parent_id=parent_id,
            key_text=key_text,
            lineage=lineage,
            snapshot=snapshot,
        )
    return result


def search(
    spec: contracts.TuneArgs,
    *,
    entrypoint: loops.Entrypoint,
    params: dict[str, Any],
    snapshot: train_job.Snapshot,
    encoder: FeatureEncoder,
    run_root: str,
) -> list[TrialOutcome]:
    """Run (or, after a retry, restore and finish) the Tune experiment; every trial's outcome."""
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    train_job.ensure_ray()
    datasets, data_config = train_job.training_data(snapshot, encoder, entrypoint=entrypoint)
    base_config = {**train_job.loop_config(spec, params=params, snapshot=snapshot, encoder=encoder), **data_config}
    trials_uri = storage.join_uri(run_root, TRIALS_FOLDER)
    trainable = tune.with_resources(
        tune.with_parameters(
            _trial,
            loop=entrypoint.loop,
            base_config=base_config,
            datasets=datasets,
            trainer_options={
                "trials_uri": trials_uri,
                "scaling": {
                    "num_workers": spec.scaling.num_workers,
                    "use_gpu": spec.scaling.use_gpu,
                    "resources_per_worker": dict(spec.scaling.resources_per_worker) or None,
                },
                "max_failures": spec.max_failures,
                "keep": spec.checkpoint.keep,
            },
        ),
        # The trial actor only drives its Ray Train run, so it holds no CPU (the workers hold the
        # CPUs and GPUs); Tune refuses an empty request, hence one byte of memory.
        {"memory": 1},
    )
    fs, root_path = storage.filesystem(run_root)
    experiment_path = f"{root_path.rstrip('/')}/{TUNE_RUN_NAME}"
    if tune.Tuner.can_restore(experiment_path, storage_filesystem=fs):
        tuner = tune.Tuner.restore(experiment_path, trainable, resume_errored=True, storage_filesystem=fs)
    else:
        search_spec = spec.search
        scheduler = trial_scheduler(search_spec, epochs=int(params.get("epochs", 1)))
        tuner = tune.Tuner(
            trainable,
            param_space=search_space(search_spec.search_space),
            tune_config=tune.TuneConfig(
                metric=search_spec.metric,
                mode=search_spec.mode,
                num_samples=search_spec.num_samples,
                max_concurrent_trials=search_spec.max_concurrent,
                scheduler=scheduler,
                search_alg=BasicVariantGenerator(random_state=int(params.get("seed", 0))),
            ),
            run_config=tune.RunConfig(name=TUNE_RUN_NAME, storage_path=root_path, storage_filesystem=fs, verbose=1),
        )
    grid = tuner.fit()

    epochs = int(params.get("epochs", 1))
    outcomes = []
    for result in grid:  # type: ignore[attr-defined]  # ResultGrid iterates through __getitem__/__len__
        sample = dict(result.config or {})
        trial_id = _trial_id(result)
        history = _history(result)
        if result.error is not None:
            status = "error"
        elif history and history[-1]["epoch"] >= epochs:
            status = "completed"
        else:
            status = "early_stopped"
        resumed = (result.metrics or {}).get("resumed_from_epoch")
        outcomes.append(
            TrialOutcome(
                trial_id=trial_id,
                sample=sample,
                params={**params, **sample},
                history=history,
                status=status,
                error=f"{type(result.error).__name__}: {result.error}" if result.error is not None else None,
                checkpoint_uri=_latest_checkpoint(storage.join_uri(trials_uri, trial_id)),
                resumed_from_epoch=int(resumed) if resumed is not None else None,
            )
        )
    if all(t.status == "error" for t in outcomes):
        raise RuntimeError(f"every trial failed; the first: {outcomes[0].error}" if outcomes else "the search ran no trial")
    return outcomes


def log_search(
    client: Any,
    *,
    spec: contracts.TuneArgs,
    trials: list[TrialOutcome],
    experiment_id: str,
    parent_id: str,
    key_text: str,
    lineage: Mapping[str, str],
    snapshot: train_job.Snapshot,
) -> dict[str, Any]:
    """A nested MLflow run per trial; the best trial's model on its run; the summary on the parent."""
    metric, mode = spec.search.metric, spec.search.mode
    runs: dict[str, str] = {}
    for trial in trials:
        run_id, _ = tracking.start_or_resume_run(
            client,
            experiment_id=experiment_id,
            key=tracking.run_key(f"{key_text}#trial={trial.trial_id}"),
            run_name=f"trial {trial.trial_id}",
            parent_run_id=parent_id,
            tags={
                **lineage,
                names.RUN_KIND: "trial",
                names.TRIAL_ID: trial.trial_id,
                names.TRIAL_STATUS: trial.status,
                names.CHECKPOINT_URI: trial.checkpoint_uri,
                names.ERROR: trial.error,
            },
        )
        tracking.log_params_once(client, run_id, trial.params)
        tracking.log_history(client, run_id, trial.history)
        tracking.end_run(client, run_id, status="FAILED" if trial.status == "error" else "FINISHED")
        runs[trial.trial_id] = run_id

    scored = [
        t
        for t in trials
        if t.status != "error" and t.checkpoint_uri and _finite(t.history[-1].get(metric) if t.history else None)
    ]
    if not scored:
        raise RuntimeError(
            f"no trial reported a finite {metric!r} with a checkpoint; trials: {[(t.trial_id, t.status) for t in trials]}"
        )
    best = (max if mode == "max" else min)(scored, key=lambda t: t.history[-1][metric])
    best_run = runs[best.trial_id]
    assert best.checkpoint_uri is not None  # every scored trial has one

    model_uri = tracking.logged_model_uri(experiment_id, best_run, checkpoint=best.checkpoint_uri)
    if model_uri is None:
        model_uri = _log_checkpoint_model(
            client,
            experiment_id=experiment_id,
            run_id=best_run,
            checkpoint_uri=best.checkpoint_uri,
            snapshot=snapshot,
            step=best.epochs,
        )
    tracking.set_tags(client, best_run, {names.MODEL_URI: model_uri, names.BEST_TRIAL: "true"})
    final = {k: v for k, v in best.history[-1].items() if k != "epoch" and _finite(v)}
    tracking.set_tags(
        client,
        parent_id,
        {
            names.BEST_TRIAL_ID: best.trial_id,
            names.BEST_RUN_ID: best_run,
            names.MODEL_URI: model_uri,
            names.CHECKPOINT_URI: best.checkpoint_uri,
        },
    )
    tracking.log_history(client, parent_id, [{"epoch": best.epochs, **{f"best_{k}": v for k, v in final.items()}}])
    return contracts.TuneResult.model_validate(
        _plain(
            {
                "mlflow_run_id": best_run,
                "parent_run_id": parent_id,
                "experiment_id": experiment_id,
                "tracking_uri": client.tracking_uri,
                "model_uri": model_uri,
                "checkpoint_uri": best.checkpoint_uri,
                "metrics": final,
                "epochs_completed": best.epochs,
                "resumed_from_epoch": best.resumed_from_epoch,
                "best_trial_id": best.trial_id,
                "best_config": best.sample,
                "trials": [
                    {
                        "trial_id": t.trial_id,
                        "mlflow_run_id": runs[t.trial_id],
                        "status": t.status,
                        "epochs": t.epochs,
                        "metric": t.history[-1].get(metric) if t.history and _finite(t.history[-1].get(metric)) else None,
                    }
                    for t in trials
                ],
            }
        )
    ).model_dump(mode="json")


def _plain(value: Any) -> Any:
    """JSON-ready values: numpy scalars (Tune samples, pandas rows) become Python ones."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def _log_checkpoint_model(
    client: Any, *, experiment_id: str, run_id: str, checkpoint_uri: str, snapshot: train_job.Snapshot, step: int
) -> str:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="rayops-best-") as tmp:
        storage.download_folder(checkpoint_uri, tmp)
        loaded = load_checkpoint(tmp)
        return tracking.log_model(
            client,
            run_id,
            experiment_id=experiment_id,
            checkpoint=loaded,
            manifest=snapshot.manifest,
            example_rows=snapshot.head(train_job.VALIDATION_SPLIT, train_job.INPUT_EXAMPLE_ROWS),
            checkpoint_uri=checkpoint_uri,
            step=step,
        )


def _latest_checkpoint(folder_uri: str) -> str | None:
    folders = {
        uri[len(folder_uri.rstrip("/")) + 1 :].split("/", 1)[0]
        for uri in storage.list_uris(folder_uri)
        if f"/{builtin.CHECKPOINT_DIR_PREFIX}" in uri
    }
    done = sorted(
        n
        for n in folders
        if n.startswith(builtin.CHECKPOINT_DIR_PREFIX) and storage.exists(storage.join_uri(folder_uri, n, MODEL_SPEC_FILE))
    )
    return storage.join_uri(folder_uri, done[-1]) if done else None


def _trial_id(result: Any) -> str:
    import re

    found = (result.metrics or {}).get("trial_id")
    if found:
        return str(found)
    # A trial that failed before reporting: its folder is named <trainable>_<trial_id>_<index>_<config>.
    match = re.search(r"_([0-9a-f]{5}_\d{5})_", result.path.rstrip("/").rsplit("/", 1)[-1])
    if match is None:
        raise RuntimeError(f"cannot tell the trial id of {result.path}")
    return match.group(1)


def _history(result: Any) -> list[dict[str, Any]]:
    frame = result.metrics_dataframe
    if frame is None or "epoch" not in frame.columns:
        return []
    rows: dict[int, dict[str, Any]] = {}
    for row in frame.to_dict("records"):
        entry = {k: v for k, v in row.items() if k not in _TUNE_COLUMNS and not k.startswith("config/") and _finite(v)}
        if "epoch" in entry:
            entry["epoch"] = int(entry["epoch"])
            rows[entry["epoch"]] = entry  # a replayed epoch (after a resume) keeps its last report
    return [rows[e] for e in sorted(rows)]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _search_settings(spec: contracts.TuneArgs) -> dict[str, Any]:
    search = spec.search
    return {
        **train_job._run_settings(spec),
        names.SEARCH_PREFIX + "num_samples": search.num_samples,
        names.SEARCH_PREFIX + "max_concurrent": search.max_concurrent,
        names.SEARCH_PREFIX + "metric": search.metric,
        names.SEARCH_PREFIX + "mode": search.mode,
        names.SEARCH_PREFIX + "scheduler": search.scheduler,
        names.SEARCH_PREFIX + "grace_period": search.grace_period,
        names.SEARCH_PREFIX + "space": {name: dist.model_dump(exclude_none=True) for name, dist in search.search_space.items()},
    }


if __name__ == "__main__":
    run_job(main)
