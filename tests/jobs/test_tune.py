"""The tune job on a real Ray head: Ray Tune trials, each a 1-worker Ray Train run of the
built-in loop, ASHA early stopping, a nested MLflow run per trial, the best model logged."""

from __future__ import annotations

import io

import pyarrow.parquet as pq
import pytest

from airflow_provider_rayops import storage
from airflow_provider_rayops.hooks.ray_jobs_api import JobStatus
from airflow_provider_rayops.jobs import tracking, tune
from airflow_provider_rayops.jobs.modeling import load_predictor
from airflow_provider_rayops.jobs.runtime import JobInputError

TUNE_JOB = "airflow_provider_rayops.jobs.tune"
SAMPLES = 2  # one round of two concurrent trials: each trial is a Ray Train run, 15-20 s here
EPOCHS = 3


def _args(snapshot: dict, run_root: str, **search) -> dict:
    return {
        "snapshot_uri": snapshot["snapshot_uri"],
        "entrypoint": "rayops.builtin:tabular_mlp",
        "params": {"epochs": EPOCHS, "lr": 0.01, "batch_size": 128, "hidden_sizes": [32, 32]},
        "scaling": {"num_workers": 1, "use_gpu": False, "resources_per_worker": {"CPU": 1}},
        "checkpoint": {"every_epochs": 1, "keep": 1},
        "max_failures": 0,
        "run_root": run_root,
        "experiment": "churn-tune-tests",
        "lineage": {"config_hash": "c0ffee", "dag_id": "churn", "run_id": "manual__tune", "try_number": 1},
        "search": {
            "search_space": {"lr": {"loguniform": [1e-3, 3e-2]}, "hidden_sizes": {"choice": [[16], [32, 32]]}},
            "num_samples": SAMPLES,
            "max_concurrent": 2,
            "metric": "val_auc",
            "mode": "max",
            "scheduler": "asha",
            "grace_period": 1,
            **search,
        },
    }


@pytest.fixture(scope="module")
def tuned(run_ray_job, churn_snapshot, tmp_path_factory) -> dict:
    run_root = f"file://{tmp_path_factory.mktemp('tune-runs')}/churn/manual/tune"
    job = run_ray_job(TUNE_JOB, _args(churn_snapshot, run_root), timeout_s=600)
    assert job.status is JobStatus.SUCCEEDED, job.logs[-6000:]
    return {"run_root": run_root, "result": job.result}


def test_every_trial_is_reported_and_the_best_one_is_chosen_by_the_metric(tuned):
    result = tuned["result"]
    trials = result["trials"]
    assert len(trials) == SAMPLES
    assert {t["status"] for t in trials} <= {"completed", "early_stopped"}
    assert any(t["status"] == "completed" for t in trials)
    best = max((t for t in trials if t["metric"] is not None), key=lambda t: t["metric"])
    assert result["best_trial_id"] == best["trial_id"]
    assert result["mlflow_run_id"] == best["mlflow_run_id"]
    assert result["metrics"]["val_auc"] == pytest.approx(best["metric"])
    assert set(result["best_config"]) == {"lr", "hidden_sizes"}
    assert 1e-3 <= result["best_config"]["lr"] <= 3e-2
    assert result["checkpoint_uri"].startswith(f"{tuned['run_root']}/trials/{best['trial_id']}/checkpoint_epoch_")


def test_asha_stops_a_trial_only_after_its_grace_period(tuned):
    for trial in tuned["result"]["trials"]:
        assert trial["epochs"] >= 1
        assert (trial["epochs"] == EPOCHS) == (trial["status"] == "completed")


def test_every_trial_is_a_nested_mlflow_run_with_its_params_and_metrics(tuned, mlflow_uri, monkeypatch):
    monkeypatch.setenv(tracking.TRACKING_URI_ENV, mlflow_uri)
    client = tracking.client()
    result = tuned["result"]
    parent = client.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["rayops.kind"] == "tune"
    assert parent.data.tags["rayops.best_trial_id"] == result["best_trial_id"]
    assert parent.data.params["rayops.search.num_samples"] == str(SAMPLES)
    for trial in result["trials"]:
        run = client.get_run(trial["mlflow_run_id"])
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["rayops.trial_id"] == trial["trial_id"]
        assert run.data.tags["rayops.trial_status"] == trial["status"]
        assert run.data.tags["rayops.config_hash"] == "c0ffee"
        assert run.data.params["epochs"] == str(EPOCHS) and "lr" in run.data.params
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_auc")]
        assert sorted(steps) == list(range(1, trial["epochs"] + 1))


def test_the_best_trials_model_is_logged_and_beats_the_base_rate(tuned, churn_snapshot, mlflow_uri, monkeypatch):
    from sklearn.metrics import roc_auc_score

    monkeypatch.setenv(tracking.TRACKING_URI_ENV, mlflow_uri)
    predictor = load_predictor(tuned["result"]["model_uri"])
    validation = pq.read_table(
        io.BytesIO(storage.read_bytes(storage.join_uri(churn_snapshot["snapshot_uri"], "validation.parquet")))
    )
    truth = validation.column("churned").to_numpy(zero_copy_only=False).astype(bool)
    assert roc_auc_score(truth, predictor.predict_proba(validation)[:, 1]) > 0.75


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"search_space": {"lrr": {"uniform": [0.001, 0.01]}}},
            "search.search_space.lrr: not a parameter of rayops.builtin:tabular_mlp",
        ),
        (
            {"search_space": {"lr": {"uniform": [-1.0, 0.01]}}},
            "search.search_space.lr can sample -1.0, which the loop refuses: params.lr=-1.0",
        ),
        ({"metric": "val_f1"}, "search.metric='val_f1': rayops.builtin:tabular_mlp reports"),
        (
            {"metric": "val_rmse", "mode": "min"},
            "search.metric='val_rmse': rayops.builtin:tabular_mlp reports train_loss, val_loss, epoch_time_s, samples_per_s, "
            "val_accuracy, val_auc for a classification snapshot",
        ),
        (
            {"search_space": {"loss": {"choice": ["auto", "huber"]}}},
            "search.search_space.loss can sample 'huber', which the loop refuses: params.loss='huber': the task is "
            "classification, whose losses are auto, cross_entropy",
        ),
        ({"grace_period": 5}, "search.grace_period=5: more than params.epochs=3"),
        ({"num_samples": 0}, "job argument search.num_samples=0"),
    ],
)
def test_a_search_the_loop_cannot_run_is_refused_before_anything_runs(change, message, churn_snapshot, tmp_path):
    args = _args(churn_snapshot, f"file://{tmp_path}/run", **change)
    with pytest.raises(JobInputError) as error:
        tune.main(args)
    assert str(error.value).startswith(message), str(error.value)


def test_a_retry_restores_the_search_instead_of_running_it_again(tuned, run_ray_job, churn_snapshot, mlflow_uri, monkeypatch):
    first = tuned["result"]
    retry = run_ray_job(TUNE_JOB, _args(churn_snapshot, tuned["run_root"]), timeout_s=600)
    assert retry.status is JobStatus.SUCCEEDED, retry.logs[-6000:]
    again = retry.result
    assert sorted(t["trial_id"] for t in again["trials"]) == sorted(t["trial_id"] for t in first["trials"])
    assert (again["parent_run_id"], again["mlflow_run_id"], again["model_uri"]) == (
        first["parent_run_id"],
        first["mlflow_run_id"],
        first["model_uri"],
    )
    monkeypatch.setenv(tracking.TRACKING_URI_ENV, mlflow_uri)
    client = tracking.client()
    children = client.search_runs(
        [first["experiment_id"]], filter_string=f"tags.`mlflow.parentRunId` = '{first['parent_run_id']}'"
    )
    assert len(children) == SAMPLES
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_auc")]
        assert len(steps) == len(set(steps))  # no epoch logged twice


def test_each_yaml_distribution_becomes_the_ray_tune_domain_it_names():
    """What the trials sample from: uniform and loguniform floats, randint's exclusive high, choice, grid."""
    from ray.tune.search.sample import Categorical, Float, Integer, LogUniform

    from airflow_provider_rayops.config.schema import Distribution

    space = tune.search_space(
        {
            "dropout": Distribution(uniform=(0.0, 0.5)),
            "lr": Distribution(loguniform=(1e-4, 1e-2)),
            "seed": Distribution(randint=(0, 10)),
            "batch_size": Distribution(choice=[128, 256]),
            "hidden_sizes": Distribution(grid=[[16], [32, 32]]),
        }
    )
    assert isinstance(space["dropout"], Float) and (space["dropout"].lower, space["dropout"].upper) == (0.0, 0.5)
    assert isinstance(space["lr"].get_sampler(), LogUniform) and (space["lr"].lower, space["lr"].upper) == (1e-4, 1e-2)
    assert isinstance(space["seed"], Integer) and (space["seed"].lower, space["seed"].upper) == (0, 10)
    assert isinstance(space["batch_size"], Categorical) and space["batch_size"].categories == [128, 256]
    assert space["hidden_sizes"] == {"grid_search": [[16], [32, 32]]}
    samples = {space["seed"].sample() for _ in range(200)}
    assert samples <= set(range(10)) and 9 in samples  # randint's high is exclusive, its low..high-1 all reachable


def test_fifo_runs_every_trial_to_the_end_and_asha_stops_early_after_the_grace_period():
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from airflow_provider_rayops.config.schema import Distribution, TuneSpec

    search = {"search_space": {"lr": Distribution(uniform=(0.001, 0.01))}, "metric": "val_auc", "mode": "max"}
    fifo = tune.trial_scheduler(TuneSpec(**search, scheduler="fifo"), epochs=7)
    assert type(fifo) is FIFOScheduler
    asha = tune.trial_scheduler(TuneSpec(**search, scheduler="asha", grace_period=2), epochs=7)
    assert isinstance(asha, ASHAScheduler)
    # Ray keeps these private: epochs are the time unit, the first rung is the grace period, each
    # later rung doubles it until max_t.
    assert (asha._time_attr, asha._max_t, asha._reduction_factor) == ("epoch", 7, 2)
    assert [milestone for milestone, _ in asha._brackets[0]._rungs] == [4, 2]
