"""Airflow's own DagBag over dags/: the DAGs a user sees in the UI."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from airflow_provider_rayops.operators.run_values import TriggerParam, UpstreamResult

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _metadata_db(airflow_db):
    """DagBag reads Airflow's metadata DB (DAG and bundle tables) while it loads."""


def dagbag(config_dir: Path | None = None, monkeypatch=None):
    from airflow.dag_processing.dagbag import DagBag

    if config_dir is not None:
        monkeypatch.setenv("RAYOPS_CONFIG_DIR", str(config_dir))
    return DagBag(dag_folder=str(ROOT / "dags"))


@pytest.fixture
def configs(tmp_path: Path) -> Path:
    folder = tmp_path / "dag_configs"
    shutil.copytree(ROOT / "dag_configs", folder)
    return folder


def test_dags_folder_loads_with_zero_import_errors():
    bag = dagbag()
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == ["churn", "churn__monitor", "churn__rollback", "churn_gpu"]
    assert bag.get_dag("churn_gpu").is_paused_upon_creation is True  # it needs a Kubernetes cluster


def test_example_pipeline_yields_the_expected_task_graph():
    dag = dagbag().get_dag("churn")
    assert [t.task_id for t in dag.tasks] == [
        "ingest.snapshot",
        "train.fit",
        "evaluate.score",
        "promote.register",
        "deploy.serve",
        "promote.champion",
    ]
    assert dag.get_task("promote.register").upstream_task_ids == {"evaluate.score"}
    assert dag.get_task("deploy.serve").upstream_task_ids == {"promote.register"}
    assert dag.get_task("promote.champion").upstream_task_ids == {"deploy.serve", "promote.register"}
    assert type(dag.get_task("promote.register")).__name__ == "RegisterMLflowModelOperator"
    assert dag.get_task("train.fit").upstream_task_ids == {"ingest.snapshot"}
    assert dag.get_task("evaluate.score").upstream_task_ids == {"train.fit"}
    assert dag.get_task("train.fit").with_mlflow and dag.get_task("evaluate.score").with_mlflow
    assert not dag.get_task("ingest.snapshot").with_mlflow
    assert dag.get_task("train.fit").job_args["params"]["epochs"] == TriggerParam("epochs", 4)
    assert dag.params["epochs"] == 4 and dag.params["lr"] == 0.003
    assert dag.task_group.get_child_by_label("ingest").group_id == "ingest"
    task = dag.get_task("ingest.snapshot")
    assert type(task).__name__ == "SubmitRayJobOperator"
    assert task.entrypoint == "python -m airflow_provider_rayops.jobs.ingest"
    assert task.job_args["source"] == TriggerParam(
        "source",
        f"file://{ROOT}/data/churn.parquet",
        within=(f"file://{ROOT}/", f"file://{ROOT}/.rayops/artifacts/"),
        base_dir=str(ROOT),
    )
    assert set(dag.tags) == {"rayops", "tabular", "demo"}
    # @weekly, or the monitor's drift asset event
    assert type(dag.timetable).__name__ == "AssetOrTimeSchedule" and dag.timetable.timetable.expression == "0 0 * * 0"
    assert dag.timetable.asset_condition.name == "rayops_drift__churn"
    assert dag.params["validation_fraction"] == 0.2
    assert dag.params["split_seed"] == 7
    assert "```yaml\n# Customer churn" in dag.doc_md
    assert task.retries == 1 and task.owner == "ml-platform"


def test_a_broken_config_becomes_a_visible_dag_and_hides_no_other(configs, monkeypatch):
    (configs / "fraud.yaml").write_text("pipeline: fraud\ndata:\n  source: file://x.csv\n  targt: y\n")
    bag = dagbag(configs, monkeypatch)
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == ["broken__fraud", "churn", "churn__monitor", "churn__rollback", "churn_gpu"]
    broken = bag.get_dag("broken__fraud")
    assert "config-error" in broken.tags
    assert f"{configs / 'fraud.yaml'}:4:3: data.targt: unknown key 'targt'; did you mean 'target'?" in broken.doc_md
    assert f"{configs / 'fraud.yaml'}:2:1: data.target: required key missing" in broken.doc_md


def test_a_hostile_config_is_its_own_broken_dag(configs, monkeypatch):
    from tests.config.test_hostile_yaml import alias_bomb

    (configs / "bomb.yaml").write_text(alias_bomb())
    (configs / "latin1.yaml").write_bytes(b"pipeline: x\ndescription: caf\xe9\n")
    bag = dagbag(configs, monkeypatch)
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == ["broken__bomb", "broken__latin1", "churn", "churn__monitor", "churn__rollback", "churn_gpu"]
    assert "expands to more than 100,000 values" in bag.get_dag("broken__bomb").doc_md
    assert f"{configs / 'latin1.yaml'}:2:17: not UTF-8: byte 0xe9" in bag.get_dag("broken__latin1").doc_md


def test_running_the_broken_dag_fails_with_the_config_errors(configs, monkeypatch, airflow_db, capsys):
    (configs / "fraud.yaml").write_text("pipeline: fraud\ndata: {source: file://x.csv, target: y}\nschedule: nightly\n")
    broken = dagbag(configs, monkeypatch).get_dag("broken__fraud")
    run = broken.test()
    assert run.state == "failed"
    [ti] = run.get_task_instances()
    assert (ti.state, ti.try_number) == ("failed", 1)  # a config error is not retried
    captured = capsys.readouterr()
    log = captured.out + captured.err
    assert "InvalidPipelineConfig" in log
    assert f"{configs / 'fraud.yaml'} is not a valid rayops pipeline" in log
    assert f"{configs / 'fraud.yaml'}:3:1: schedule: expected a cron expression (5 fields) or one of @continuous" in log


def test_params_are_validated_when_triggering(airflow_db):
    from airflow.sdk.definitions.param import ParamValidationError

    dag = dagbag().get_dag("churn")
    with pytest.raises(ParamValidationError, match="validation_fraction"):
        dag.test(run_conf={"validation_fraction": 1.5})
    with pytest.raises(ParamValidationError, match="source"):
        dag.test(run_conf={"source": "/not/a/uri"})


def test_a_source_given_at_trigger_time_outside_the_allowed_roots_fails_before_any_job(airflow_db, capsys):
    dag = dagbag().get_dag("churn")
    run = dag.test(run_conf={"source": "file:///etc/passwd"})
    states = {ti.task_id: (ti.state, ti.try_number) for ti in run.get_task_instances()}
    assert states["ingest.snapshot"] == ("failed", 1)  # refused, not retried
    assert states["train.fit"][0] == "upstream_failed"
    assert "param source='file:///etc/passwd' lies outside the pipeline's allowed roots" in capsys.readouterr().out
    [ingest] = [ti for ti in run.get_task_instances() if ti.task_id == "ingest.snapshot"]
    assert ingest.xcom_pull(task_ids="ingest.snapshot", key="ray_job") is None  # nothing was submitted


def test_the_param_defaults_are_the_yamls_values_and_pass_their_schema():
    dag = dagbag().get_dag("churn")
    # dag_configs/churn.yaml: data.source / split / train.params, as a user triggering the DAG sees them.
    assert dict(dag.params) == {
        "source": f"file://{ROOT}/data/churn.parquet",
        "validation_fraction": 0.2,
        "split_seed": 7,
        "epochs": 4,
        "lr": 0.003,
        "batch_size": 256,
    }
    for name in dag.params:
        param = dag.params.get_param(name)
        assert param.resolve() == param.value
        assert param.schema["type"] in {"string", "number", "integer"}


def test_require_approval_puts_a_human_approval_between_register_and_champion(configs, monkeypatch):
    churn = configs / "churn.yaml"
    churn.write_text(churn.read_text().replace("require_approval: false", "require_approval: true"))
    dag = dagbag(configs, monkeypatch).get_dag("churn")
    approve = dag.get_task("promote.approve")
    assert type(approve).__name__ == "ApproveModelVersionOperator"
    assert approve.upstream_task_ids == {"promote.register"}
    assert dag.get_task("deploy.serve").upstream_task_ids == {"promote.approve", "promote.register"}
    assert dag.get_task("promote.champion").upstream_task_ids == {"deploy.serve", "promote.approve", "promote.register"}


def test_a_deploy_section_serves_the_version_before_it_becomes_champion_and_adds_a_rollback_dag(configs, monkeypatch):
    import datetime as dt

    churn = configs / "churn.yaml"
    example = churn.read_text()
    churn.write_text(
        example[: example.index("\ndeploy:\n") + 1]  # the example's own deploy section, replaced
        + "deploy:\n  app: churn-api\n  route_prefix: /churn\n  replicas: {min: 1, max: 3}\n  sticky_header: X-User\n"
        + "  canary: {steps: [10, 50, 100], hold: 5m, max_p99_ms: 80, on_breach: skip}\n"
        + "timeouts: {deploy: 3h}\n"
    )
    bag = dagbag(configs, monkeypatch)
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == ["churn", "churn__rollback", "churn_gpu"]  # the monitor section went with the rest
    dag = bag.get_dag("churn")
    serve = dag.get_task("deploy.serve")
    assert type(serve).__name__ == "DeployRayServeOperator"
    assert serve.upstream_task_ids == {"promote.register"}
    assert dag.get_task("promote.champion").upstream_task_ids == {"deploy.serve", "promote.register"}  # once it serves
    assert (serve.app, serve.route_prefix, serve.sticky_header, serve.deferrable) == ("churn-api", "/churn", "X-User", True)
    assert serve.replicas == {"min": 1, "max": 3, "num_cpus": 1.0, "upscale_delay_s": 30.0, "look_back_period_s": 30.0}
    assert serve.inference_log == {
        "uri": dag.get_task("ingest.snapshot").job_args["snapshot_root"].rsplit("/snapshots", 1)[0] + "/inference/churn",
        "sample": 1.0,
    }
    assert serve.canary["steps"] == [10.0, 50.0, 100.0] and serve.canary["hold_s"] == 300.0
    assert serve.canary["on_breach"] == "skip" and serve.canary["max_p99_ms"] == 80.0
    assert serve.compute == dag.get_task("train.fit").compute  # where the jobs run
    assert serve.execution_timeout == dt.timedelta(hours=3)
    assert serve.version.operator.task_id == "promote.register"  # its XCom, resolved at run time
    rollback = bag.get_dag("churn__rollback")
    assert [t.task_id for t in rollback.tasks] == ["rollback"]
    task = rollback.get_task("rollback")
    assert type(task).__name__ == "RollbackRayServeOperator" and task.app == "churn-api"
    assert (task.champion_alias, task.previous_alias) == ("champion", "previous")
    assert rollback.params["version"] == "" and rollback.schedule is None


def test_every_stage_has_its_time_limit_from_the_yaml(configs, monkeypatch):
    import datetime as dt

    churn = configs / "churn.yaml"
    churn.write_text(
        churn.read_text().replace("require_approval: false", "require_approval: true")
        + "timeouts: {train: 90m, approval: 2d, unreachable: 20s}\n"
    )
    dag = dagbag(configs, monkeypatch).get_dag("churn")
    limits = {t.task_id: t.execution_timeout for t in dag.tasks}
    assert limits == {
        "ingest.snapshot": dt.timedelta(hours=2),
        "train.fit": dt.timedelta(minutes=90),
        "evaluate.score": dt.timedelta(hours=2),
        "promote.register": dt.timedelta(minutes=30),
        "promote.approve": None,  # a person's answer is bounded by the approval's response timeout
        "deploy.serve": dt.timedelta(hours=2),
        "promote.champion": dt.timedelta(minutes=30),
    }
    assert dag.get_task("promote.approve").response_timeout == dt.timedelta(days=2)
    assert dag.get_task("train.fit").unreachable_timeout == 20.0


def test_a_tune_section_replaces_the_train_task_with_a_search(configs, monkeypatch):
    churn = configs / "churn.yaml"
    churn.write_text(
        churn.read_text()
        + "tune:\n  metric: val_auc\n  mode: max\n  num_samples: 4\n"
        + "  search_space: {lr: {loguniform: [0.0001, 0.01]}, batch_size: {choice: [128, 256]}}\n"
    )
    dag = dagbag(configs, monkeypatch).get_dag("churn")
    assert [t.task_id for t in dag.tasks][:3] == ["ingest.snapshot", "tune.search", "evaluate.score"]
    search = dag.get_task("tune.search")
    assert search.entrypoint == "python -m airflow_provider_rayops.jobs.tune"
    assert search.job_args["search"]["search_space"]["lr"] == {"loguniform": [0.0001, 0.01]}
    assert dag.get_task("evaluate.score").job_args["model_uri"] == UpstreamResult("tune.search", "model_uri")


def test_the_yamls_data_tracking_and_promote_settings_reach_the_tasks(configs, monkeypatch):
    churn = configs / "churn.yaml"
    text = churn.read_text()
    assert "  target: churned\n" in text and "require_approval: false" in text
    text = text.replace("  target: churned\n", "  target: churned\n  format: csv\n  features: [tenure_months, plan]\n")
    text = text.replace("require_approval: false", "require_approval: false\n  on_gate_failure: fail")
    churn.write_text(text + "tracking: {experiment: churn-weekly}\n")
    dag = dagbag(configs, monkeypatch).get_dag("churn")
    ingest = dag.get_task("ingest.snapshot").job_args
    assert (ingest["format"], ingest["features"]) == ("csv", ["tenure_months", "plan"])
    assert dag.get_task("train.fit").job_args["experiment"] == "churn-weekly"
    assert dag.get_task("promote.register").on_gate_failure == "fail"


def test_the_pipelines_runtime_env_and_code_reach_every_ray_job(configs, monkeypatch):
    """What each job is sent besides rayops' own settings (the cluster installs the pip list; no
    test here can reach a package index, so the list is checked as the job would receive it)."""
    loops = configs.parent / "team_loops"
    loops.mkdir()
    (loops / "__init__.py").write_text("")
    (loops / "tabular.py").write_text("def train(config):\n    pass\n")
    churn = configs / "churn.yaml"
    text = churn.read_text().replace("rayops.builtin:tabular_mlp", "team_loops.tabular:train")
    churn.write_text(
        text + "runtime_env:\n  pip: ['lightgbm>=4']\n  env_vars: {OMP_NUM_THREADS: 2, TOKENIZERS_PARALLELISM: false}\n"
    )
    dag = dagbag(configs, monkeypatch).get_dag("churn")
    for task_id in ("ingest.snapshot", "train.fit", "evaluate.score"):
        task = dag.get_task(task_id)
        assert task.runtime_env == {
            "pip": ["lightgbm>=4"],
            "env_vars": {"OMP_NUM_THREADS": "2", "TOKENIZERS_PARALLELISM": "false"},
        }
        assert task.code.modules == (str(loops),) and task.code.pip == ("lightgbm>=4",)
        sent = task._runtime_env(("gcs://_ray_pkg_x.zip",))
        assert sent["pip"] == ["lightgbm>=4"] and sent["py_modules"] == ["gcs://_ray_pkg_x.zip"]
        assert sent["env_vars"]["OMP_NUM_THREADS"] == "2" and sent["env_vars"]["RAYOPS_PROVIDER_VERSION"]


def test_a_pipeline_whose_dag_cannot_be_built_becomes_a_broken_dag_and_hides_no_other(configs, monkeypatch):
    """A factory bug (here: building any DAG for `fraud` raises) must not take the other pipelines down."""
    from airflow_provider_rayops.factory import dags as factory_dags

    (configs / "fraud.yaml").write_text((configs / "churn.yaml").read_text().replace("pipeline: churn", "pipeline: fraud"))
    real = factory_dags.build_pipeline_dag

    def build(loaded):
        if loaded.spec.pipeline == "fraud":
            raise RuntimeError("a bug in the factory")
        return real(loaded)

    monkeypatch.setattr(factory_dags, "build_pipeline_dag", build)
    bag = dagbag(configs, monkeypatch)
    assert bag.import_errors == {}
    assert sorted(bag.dag_ids) == ["broken__fraud", "churn", "churn__monitor", "churn__rollback", "churn_gpu"]
    doc = bag.get_dag("broken__fraud").doc_md
    assert f"{configs / 'fraud.yaml'}:1:1: building the DAG failed: RuntimeError: a bug in the factory" in doc


def test_a_monitor_section_adds_a_monitor_dag_whose_drift_event_starts_the_pipeline():
    from airflow_provider_rayops.operators.run_values import RunFolder, RunTrigger

    bag = dagbag()
    monitor = bag.get_dag("churn__monitor")
    assert [t.task_id for t in monitor.tasks] == ["check"]
    assert type(monitor.timetable).__name__ == "CronTriggerTimetable" and monitor.timetable.expression == "0 * * * *"
    sensor = monitor.get_task("check")
    assert type(sensor).__name__ == "DriftSensor"
    # Between pokes the sensor holds no worker slot; a check that waited it out is skipped, not failed.
    assert (sensor.mode, sensor.soft_fail, sensor.poke_interval, sensor.timeout) == ("reschedule", True, 30.0, 3600.0)
    assert (sensor.lifecycle_dag_id, sensor.registered_model, sensor.champion_alias) == ("churn", "churn", "champion")
    assert sensor.drift["min_rows"] == 500 and sensor.drift["drift_share"] == 0.5 and sensor.cooldown_s == 3600.0
    assert (sensor.current, sensor.reference) == (None, None)  # the inference log against the training split
    [asset] = sensor.outlets
    lifecycle = bag.get_dag("churn")
    assert lifecycle.timetable.asset_condition == asset
    # defaults.yaml: the pipeline's DAGs arrive unpaused, so cron and drift start runs without a click
    assert {bag.get_dag(d).is_paused_upon_creation for d in ("churn", "churn__monitor", "churn__rollback")} == {False}
    lineage = lifecycle.get_task("train.fit").job_args["lineage"]
    assert (lineage["trigger"], lineage["trigger_report"]) == (RunTrigger("kind"), RunTrigger("report"))
    folder = lifecycle.get_task("evaluate.score").job_args["predictions_folder"]
    assert isinstance(folder, RunFolder) and folder.base.endswith("/.rayops/artifacts/runs/churn")


def test_alerts_are_called_when_any_task_of_the_pipeline_fails(configs, monkeypatch):
    churn = configs / "churn.yaml"
    churn.write_text(
        churn.read_text()
        + "alerts:\n  - webhook: ml_alerts\n  - notifier: airflow.providers.smtp.notifications.smtp.SmtpNotifier\n"
        + "    kwargs: {to: ml-team@example.com, subject: 'churn failed {{ conn.x.password }}', smtp_conn_id: smtp_ml}\n"
    )
    bag = dagbag(configs, monkeypatch)
    assert bag.import_errors == {}
    for dag_id in ("churn", "churn__monitor", "churn__rollback"):
        for t in bag.get_dag(dag_id).tasks:
            webhook, smtp = t.on_failure_callback
            assert type(webhook).__name__ == "WebhookNotifier" and webhook.conn_id == "ml_alerts"
            assert type(smtp).__name__ == "SmtpNotifier" and smtp.template_fields == ()  # the subject is never rendered
            assert smtp.subject == "churn failed {{ conn.x.password }}"
