"""Each class of config error: the exact message, file, line and column."""

from __future__ import annotations

from airflow_provider_rayops.config.loader import load_config_dir, load_defaults, load_pipeline

from .conftest import MINIMAL, errors_of, load


def test_valid_minimal_pipeline_loads_with_defaults(write, config_dir):
    loaded = load_pipeline(write("churn.yaml", MINIMAL), defaults=load_defaults(config_dir), env={})
    assert loaded.spec.compute == "local"
    assert loaded.spec.profile.backend == "local"
    assert loaded.spec.owner == "ml-platform"  # from defaults.yaml
    # relative file:// URIs resolve against the project folder (parent of dag_configs/)
    assert loaded.spec.data.source == f"file://{config_dir.parent.resolve()}/data/churn.parquet"
    assert len(loaded.config_hash) == 64


def test_yaml_syntax_error_names_line_and_column(write):
    path = write("p.yaml", "pipeline: churn\ndata: {source: file://x.csv\n")
    [error] = errors_of(path)
    assert error.startswith(f"{path}:3:1: not valid YAML: ")


def test_python_object_tags_are_refused(write):
    path = write("p.yaml", MINIMAL + "description: !!python/object/apply:os.system ['echo hi']\n")
    assert errors_of(path) == [
        f"{path}:5:14: description: YAML tag '!!python/object/apply:os.system' is not allowed: "
        "pipeline configs hold plain values only"
    ]


def test_duplicate_key_is_an_error_not_silently_overwritten(write):
    path = write("p.yaml", MINIMAL + "schedule: '@daily'\nschedule: '@weekly'\n")
    assert errors_of(path) == [f"{path}:6:1: schedule: duplicate key (first defined at line 5)"]


def test_unknown_key_suggests_the_nearest_valid_key(write):
    path = write("p.yaml", MINIMAL + "  min_row: 10\n")
    assert errors_of(path) == [f"{path}:5:3: data.min_row: unknown key 'min_row'; did you mean 'min_rows'?"]


def test_unknown_key_without_near_match_lists_the_valid_keys(write):
    path = write("p.yaml", MINIMAL + "  split: {zzz: 1}\n")
    assert errors_of(path) == [f"{path}:5:11: data.split.zzz: unknown key 'zzz'; expected one of: validation, seed"]


def test_missing_required_key_says_what_it_is(write):
    path = write("p.yaml", "pipeline: churn\ndata:\n  source: file://x.csv\n")
    assert errors_of(path) == [f"{path}:2:1: data.target: required key missing (Name of the label column.)"]


def test_wrong_type_says_expected_and_found(write):
    path = write("p.yaml", MINIMAL + "  min_rows: many\n")
    assert errors_of(path) == [
        f"{path}:5:3: data.min_rows: expected a valid integer, unable to parse string as an integer, found 'many'"
    ]


def test_source_must_be_a_file_or_s3_uri(write):
    path = write("p.yaml", "pipeline: churn\ndata:\n  source: data/churn.parquet\n  target: y\n")
    assert errors_of(path) == [
        f"{path}:3:3: data.source: expected a URI starting with file:// or s3://, found 'data/churn.parquet'"
    ]


def test_bad_cron_schedule(write):
    path = write("p.yaml", MINIMAL + "schedule: every monday\n")
    [error] = errors_of(path)
    assert error.startswith(f"{path}:5:1: schedule: expected a cron expression (5 fields) or one of @continuous")
    assert error.endswith("found 'every monday'")


def test_missing_environment_variable_is_an_error(write):
    path = write("p.yaml", MINIMAL.replace("file://data/churn.parquet", "file://${RAYOPS_DATA}/churn.parquet"))
    assert errors_of(path, env={}) == [
        f"{path}:3:3: data.source: environment variable RAYOPS_DATA is not set (write ${{RAYOPS_DATA:-default}} to give a default)"
    ]


def test_environment_variables_expand_explicitly_with_defaults_and_escape(write, config_dir):
    text = MINIMAL.replace("file://data/churn.parquet", "file://${RAYOPS_DATA}/${RAYOPS_PREFIX:-raw}/churn.parquet")
    path = write("p.yaml", text + "description: costs $${HOME} and $HOME\n")
    loaded = load_pipeline(path, defaults=load_defaults(config_dir), env={"RAYOPS_DATA": "lake"})
    assert loaded.spec.data.source == f"file://{config_dir.parent.resolve()}/lake/raw/churn.parquet"
    assert loaded.spec.description == "costs ${HOME} and $HOME"  # only ${...} expands


def test_unknown_compute_profile_suggests_a_known_one(write):
    path = write("p.yaml", MINIMAL + "compute: dev-clustr\n")
    assert errors_of(path) == [f"{path}:5:1: compute: unknown compute profile 'dev-clustr'; did you mean 'dev-cluster'?"]


def test_monitor_needs_a_champion_to_watch(write):
    path = write("p.yaml", MINIMAL + "monitor:\n  current: file://live/\n")
    assert errors_of(path) == [f"{path}:5:1: monitor: the monitor stage needs a promote section"]


def test_monitor_without_deploy_names_the_live_data_it_needs(write):
    path = write(
        "p.yaml",
        MINIMAL
        + "train: {entrypoint: rayops.builtin:tabular_mlp}\nevaluate: {}\npromote: {registered_model: churn}\nmonitor:\n  min_rows: 10\n",
    )
    assert errors_of(path) == [
        f"{path}:8:1: monitor: monitor.current is needed without a deploy section: the default live data is the "
        "endpoint's inference log"
    ]


def test_a_performance_trigger_takes_exactly_one_bound(write):
    path = write(
        "p.yaml",
        MINIMAL
        + "train: {entrypoint: rayops.builtin:tabular_mlp}\nevaluate: {}\npromote: {registered_model: churn}\nmonitor:\n  current: file://live/\n"
        "  performance: {labels: file://labels/, join_key: id, metric: accuracy}\n",
    )
    [error] = errors_of(path)
    assert error.startswith(f"{path}:10:3: monitor.performance: set exactly one of min")


def test_bad_compute_profile_in_defaults_points_at_defaults_yaml(write, config_dir):
    defaults = config_dir / "defaults.yaml"
    defaults.write_text(defaults.read_text().replace("    conn_id: rayops_ray_dev", "    conn: rayops_ray_dev"))
    path = write("p.yaml", MINIMAL)
    line = next(i for i, text in enumerate(defaults.read_text().splitlines(), 1) if "conn: rayops_ray_dev" in text)
    assert errors_of(path) == [
        f"{defaults}:{line}:5: compute_profiles.dev-cluster.conn: unknown key 'conn'; did you mean 'conn_id'?"
    ]


def test_unknown_backend_names_the_valid_ones(write):
    path = write("p.yaml", MINIMAL + "compute_profiles:\n  mine: {backend: slurm}\ncompute: mine\n")
    assert errors_of(path) == [
        f"{path}:6:10: compute_profiles.mine.backend: expected backend one of 'local', 'ray', 'kuberay', found 'slurm'"
    ]


def test_gate_of_no_known_shape(write):
    # evaluate is refused as not available yet, but its schema is checked already
    path = write("p.yaml", MINIMAL + "evaluate:\n  gates:\n    - {metric: val_auc}\n")
    errors = errors_of(path)
    assert f"{path}:7:7: evaluate.gates[0]: a metric gate needs min, max or min_gain_over_champion" in errors


def test_canary_steps_must_increase_to_100(write):
    text = MINIMAL + "deploy:\n  app: churn\n  route_prefix: /churn\n  canary: {steps: [50, 10]}\n"
    errors = errors_of(write("p.yaml", text))
    assert any(
        ":8:12: deploy.canary.steps: expected increasing percentages in (0, 100] ending at 100, found [50, 10]" in e
        for e in errors
    )


def test_all_errors_of_a_file_are_reported_at_once(write):
    path = write(
        "p.yaml",
        """
        pipeline: Churn
        schedul: "@daily"
        data:
          source: churn.csv
          target: churned
          min_rows: 0
        """,
    )
    errors = errors_of(path)
    assert [e.split(": ")[0] for e in errors] == [f"{path}:1:1", f"{path}:2:1", f"{path}:4:3", f"{path}:6:3"]


def test_one_broken_file_never_hides_the_others(write, config_dir):
    write("good.yaml", MINIMAL)
    write("bad.yaml", "pipeline: other\n")
    result = load_config_dir(config_dir, env={})
    assert [p.spec.pipeline for p in result.pipelines] == ["churn"]
    assert list(result.errors) == [str(config_dir / "bad.yaml")]


def test_two_files_may_not_define_the_same_pipeline(write, config_dir):
    write("a.yaml", MINIMAL)
    second = write("b.yaml", MINIMAL)
    result = load_config_dir(config_dir, env={})
    assert [p.file for p in result.pipelines] == [str(config_dir / "a.yaml")]
    assert (
        str(result.errors[str(second)])
        == f"{second}:1:1: pipeline: pipeline name 'churn' is already used by {config_dir / 'a.yaml'}"
    )


TRAIN = "train:\n  entrypoint: rayops.builtin:tabular_mlp\n"


def test_training_on_a_cluster_needs_a_tracking_connection(write):
    path = write("p.yaml", MINIMAL + "compute: dev-cluster\n" + TRAIN)
    assert errors_of(path) == [
        f"{path}:1:1: tracking: the train stage on compute profile 'dev-cluster' needs tracking.conn_id (a rayops_mlflow "
        "connection): the embedded MLflow store lives on this machine, out of the cluster's reach"
    ]


def test_training_scaling_comes_from_the_profile_and_the_pipeline_overrides_keys(write, config_dir):
    text = (
        MINIMAL
        + "compute_profiles:\n  local: {backend: local, scaling: {num_workers: 2, resources_per_worker: {CPU: 1}}}\n"
        + TRAIN
        + "  scaling: {num_workers: 1}\n"
    )
    loaded = load_pipeline(write("p.yaml", text), defaults=load_defaults(config_dir), env={})
    assert loaded.spec.profile.scaling.num_workers == 2
    assert loaded.spec.train_scaling.model_dump() == {"num_workers": 1, "use_gpu": False, "resources_per_worker": {"CPU": 1.0}}


def test_a_gate_can_only_judge_a_computed_metric(write):
    text = MINIMAL + TRAIN + "evaluate:\n  metrics: [accuracy, auc]\n  gates:\n    - {metric: val_auc, min: 0.8}\n"
    path = write("p.yaml", text)
    assert errors_of(path) == [
        f"{path}:10:8: evaluate.gates[0].metric: gate metric 'val_auc' is not in evaluate.metrics (accuracy, auc); did you mean 'auc'?"
    ]


def test_unknown_evaluation_metric_lists_the_known_ones(write):
    path = write("p.yaml", MINIMAL + TRAIN + "evaluate:\n  metrics: [accuracy, roc]\n")
    [error] = errors_of(path)
    assert error.startswith(f"{path}:8:23: evaluate.metrics[1]: expected 'accuracy', 'balanced_accuracy', 'auc'")


PROMOTE = MINIMAL + "train: {entrypoint: 'rayops.builtin:tabular_mlp'}\nevaluate: {metrics: [auc]}\n"


def test_the_three_aliases_default_to_distinct_names_and_can_be_renamed(write, config_dir):
    path = write(
        "p.yaml", PROMOTE + "promote: {registered_model: m, alias: prod, challenger_alias: next, previous_alias: rollback}\n"
    )
    promote = load_pipeline(path, defaults=load_defaults(config_dir), env={}).spec.promote
    assert (promote.alias, promote.challenger_alias, promote.previous_alias) == ("prod", "next", "rollback")
    path = write("q.yaml", PROMOTE + "promote: {registered_model: m}\n")
    promote = load_pipeline(path, defaults=load_defaults(config_dir), env={}).spec.promote
    assert (promote.alias, promote.challenger_alias, promote.previous_alias) == ("champion", "challenger", "previous")


def test_two_aliases_with_one_name_are_refused(write):
    path = write("p.yaml", PROMOTE + "promote: {registered_model: m, previous_alias: champion}\n")
    assert errors_of(path) == [f"{path}:7:1: promote: alias and previous_alias must differ, both are 'champion'"]
    path = write("q.yaml", PROMOTE + "promote: {registered_model: m, challenger_alias: previous}\n")
    assert errors_of(path) == [f"{path}:7:1: promote: challenger_alias and previous_alias must differ, both are 'previous'"]


def test_an_alias_mlflow_reserves_is_refused(write):
    path = write("p.yaml", PROMOTE + "promote: {registered_model: m, alias: v2}\n")
    assert errors_of(path) == [f"{path}:7:1: promote: alias='v2' is reserved by MLflow (latest, v<number>); choose another alias"]


def test_metrics_and_gates_of_the_other_task_kind_are_refused_where_they_are_written(write):
    text = (
        MINIMAL
        + TRAIN
        + "  task: regression\nevaluate:\n  gates:\n    - {metric: rmse, max: 60}\n    - {metric: auc, min: 0.8}\n"
        + "    - {per_class: recall, min: 0.5}\n"
    )
    path = write("p.yaml", text)
    assert errors_of(path) == [
        f"{path}:11:8: evaluate.gates[1].metric: gate metric 'auc' belongs to classification, but train.task: regression "
        "makes this a regression pipeline; use regression metrics (rmse, mae, r2, mape)",
        f"{path}:12:8: evaluate.gates[2].per_class: a per_class gate belongs to classification, but train.task: regression "
        "makes this a regression pipeline; a regression model has no classes to gate on; remove the gate",
    ]


def test_without_train_task_the_first_metric_decides_and_a_mix_is_refused(write):
    text = MINIMAL + TRAIN + "evaluate:\n  metrics: [rmse, accuracy]\n"
    path = write("p.yaml", text)
    assert errors_of(path) == [
        f"{path}:8:19: evaluate.metrics[1]: metric 'accuracy' belongs to classification, but metric 'rmse' makes this "
        "a regression pipeline; use regression metrics (rmse, mae, r2, mape) or set train.task"
    ]


def test_a_regression_gate_implies_the_task_and_its_default_metrics(write, config_dir):
    text = MINIMAL + TRAIN + "evaluate:\n  gates:\n    - {metric: rmse, max: 60}\n"
    loaded = load_pipeline(write("p.yaml", text), defaults=load_defaults(config_dir), env={})
    assert (loaded.spec.task, loaded.spec.evaluation_metrics) == ("regression", ["rmse", "mae", "r2"])
    path = write("q.yaml", MINIMAL + TRAIN + "evaluate:\n  gates:\n    - {metric: mape, max: 0.2}\n")
    assert errors_of(path) == [
        f"{path}:9:8: evaluate.gates[0].metric: gate metric 'mape' is not in evaluate.metrics (rmse, mae, r2); did you mean 'mae'?"
    ]


def test_a_tune_metric_of_the_other_kind_is_told_what_the_loop_reports(write):
    text = (
        MINIMAL
        + TRAIN
        + "  task: regression\ntune:\n  search_space: {lr: {uniform: [0.001, 0.01]}}\n  metric: val_auc\n  mode: max\n"
    )
    path = write("p.yaml", text)
    [error] = errors_of(path)
    assert error.endswith(
        "tune.metric: tune.metric 'val_auc' belongs to classification, but train.task: regression makes this a regression "
        "pipeline; search on what the loop reports for regression (val_loss, val_rmse, val_mae, val_r2)"
    )


def test_metric_values_of_the_wrong_type_are_schema_errors_not_a_crash(write):
    path = write("p.yaml", MINIMAL + TRAIN + "evaluate:\n  metrics: [[rmse]]\n  gates:\n    - {metric: [rmse], max: 1}\n")
    errors = errors_of(path)
    assert errors and not any("internal error" in e for e in errors), errors
    assert any("evaluate.metrics[0]" in e for e in errors) and any("evaluate.gates[0].metric" in e for e in errors), errors


def test_a_route_prefix_serve_would_refuse_is_refused_at_load(write):
    """/ is Serve's proxy's own (it answers /-/healthz there itself); Serve refuses a trailing slash."""
    for prefix in ("/", "/churn/"):
        errors = errors_of(write("p.yaml", MINIMAL + f"deploy:\n  app: churn\n  route_prefix: '{prefix}'\n"))
        assert any("deploy.route_prefix" in e for e in errors), (prefix, errors)


def test_an_alert_notifier_outside_the_allowed_modules_is_refused(write):
    path = write("p.yaml", MINIMAL + "alerts:\n  - notifier: os.system\n")
    assert errors_of(path) == [
        f"{path}:6:5: alerts[0].notifier: 'os.system' is not an Airflow provider's notifier "
        "(airflow.providers.<name>.notifications.<module>.<Class>); a platform admin can allow its package in "
        "security.notifier_modules in defaults.yaml"
    ]


def test_an_alert_names_a_webhook_or_a_notifier_not_both(write):
    path = write(
        "p.yaml", MINIMAL + "alerts:\n  - {webhook: ops, notifier: airflow.providers.smtp.notifications.smtp.SmtpNotifier}\n"
    )
    [error] = errors_of(path)
    assert error.startswith(f"{path}:6:5: alerts[0]: set exactly one of webhook")


def test_alert_arguments_never_name_a_file_or_hold_a_secret(write):
    path = write(
        "p.yaml",
        MINIMAL
        + "alerts:\n  - notifier: airflow.providers.smtp.notifications.smtp.SmtpNotifier\n"
        + "    kwargs: {to: ops@example.com, template: /proc/self/environ, password: hunter2, smtp_conn_id: smtp_ops}\n",
    )
    assert errors_of(path) == [
        f"{path}:7:35: alerts[0].kwargs.template: a notifier reads no file named in YAML (it would read it on the machines "
        "that parse DAGs)",
        f"{path}:7:65: alerts[0].kwargs.password: secrets come from Airflow connections, not YAML: give the notifier's "
        "*_conn_id instead",
    ]
