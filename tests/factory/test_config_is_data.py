"""Config text never reaches Jinja: every string of a pipeline file travels to jobs and operators as data.

Before, the factory copied config strings into templated fields and the DAG rendered them as
native objects: `registered_model: "{{ lipsum.__globals__['os'].popen('id').read() }}"` ran
on the worker, `{{ conn.<id>.password }}` copied a secret into a job.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from airflow_provider_rayops.config.loader import load_config_dir
from airflow_provider_rayops.factory.dags import build_pipeline_dag
from airflow_provider_rayops.operators.ray_job import SubmitRayJobOperator
from tests.fixtures.templates import jinja_in_templated_fields

ROOT = Path(__file__).resolve().parents[2]
RCE = "{{ lipsum.__globals__['os'].popen('id').read() }}"
SECRET = "{{ conn.rayops_s3_default.password }}"
LOOP = "{% for x in range(3) %}{{ x }}{% endfor %}"

HOSTILE_PIPELINE = f"""
pipeline: jinja
description: "{RCE}"
tags: ["{SECRET}"]
storage: {{root: "file://.rayops/{{{{ run_id }}}}"}}
tracking: {{experiment: "{SECRET}"}}
data:
  source: "file://data/{{{{ ds }}}}.parquet"
  target: "{SECRET}"
  features: ["{RCE}", "{LOOP}"]
train:
  entrypoint: rayops.builtin:tabular_mlp
  params: {{epochs: 1, note: "{RCE}", hidden_sizes: [8], extra: {{nested: ["{SECRET}"]}}}}
evaluate:
  metrics: [accuracy]
promote:
  registered_model: "{RCE}"
  alias: "{LOOP}"
  challenger_alias: "{SECRET}"
  previous_alias: "prev-{{{{ 7 * 7 }}}}"
  require_approval: true
runtime_env:
  env_vars: {{OMP_NUM_THREADS: "{RCE}"}}
  excludes: ["{SECRET}"]
"""


@pytest.fixture
def jinja_dag(tmp_path):
    folder = tmp_path / "dag_configs"
    folder.mkdir()
    shutil.copy(ROOT / "dag_configs" / "defaults.yaml", folder)
    (folder / "jinja.yaml").write_text(HOSTILE_PIPELINE)
    result = load_config_dir(folder, env={})
    assert not result.errors, result.errors
    [loaded] = result.pipelines
    return build_pipeline_dag(loaded)


def test_no_config_string_reaches_a_templated_field(jinja_dag):
    assert not jinja_dag.render_template_as_native_obj
    for task in jinja_dag.tasks:
        assert jinja_in_templated_fields(task) == [], task.task_id


def test_every_config_string_reaches_the_job_verbatim(jinja_dag):
    ingest = jinja_dag.get_task("ingest.snapshot")
    assert ingest.job_args["target"] == SECRET
    assert ingest.job_args["features"] == [RCE, LOOP]
    assert ingest.job_args["snapshot_root"].endswith("/.rayops/{{ run_id }}/snapshots/jinja")
    train = jinja_dag.get_task("train.fit")
    assert train.job_args["experiment"] == SECRET
    assert train.job_args["params"]["extra"] == {"nested": [SECRET]}
    assert train.job_args["params"]["hidden_sizes"] == [8]
    # The pipeline's runtime_env is data too: every job gets it as written, never rendered.
    assert train.runtime_env == {"env_vars": {"OMP_NUM_THREADS": RCE}}
    assert "runtime_env" in train.data_fields
    assert train.code.excludes == (SECRET,)
    assert jinja_dag.params["note"] == RCE  # a Param's default is a value, never rendered
    register = jinja_dag.get_task("promote.register")
    assert (register.registered_model, register.challenger_alias) == (RCE, SECRET)
    champion = jinja_dag.get_task("promote.champion")
    assert (champion.champion_alias, champion.previous_alias) == (LOOP, "prev-{{ 7 * 7 }}")
    assert jinja_dag.get_task("evaluate.score").job_args["registered_model"] == RCE


def test_submit_operator_resolves_job_args_without_jinja(jinja_dag):
    """The operator's own rendering step: Jinja for its templated fields only, job args untouched."""
    task = jinja_dag.get_task("ingest.snapshot")
    assert isinstance(task, SubmitRayJobOperator)
    context = {"params": {"source": task.job_args["source"].default, "validation_fraction": 0.25, "split_seed": 3}}
    task.render_template_fields(context)
    assert task.job_args["target"] == SECRET
    assert task.job_args["features"] == [RCE, LOOP]
    assert (task.job_args["split_validation"], task.job_args["seed"]) == (0.25, 3)


def test_a_connection_id_is_an_airflow_connection_id_never_text_for_a_template(tmp_path):
    """storage.conn_id and tracking.conn_id fill templated operator fields: text with template
    syntax is refused where it is written."""
    folder = tmp_path / "dag_configs"
    folder.mkdir()
    shutil.copy(ROOT / "dag_configs" / "defaults.yaml", folder)
    path = folder / "p.yaml"
    path.write_text(
        "pipeline: p\ndata: {source: file://x.csv, target: y}\n"
        f'storage: {{root: "file://.rayops", conn_id: "{RCE}"}}\n'
        f'tracking: {{conn_id: "{SECRET}"}}\n'
    )
    [error] = load_config_dir(folder, env={}).errors.values()
    messages = [str(issue) for issue in error.issues]
    assert any(m.startswith(f"{path}:3:") and "storage.conn_id" in m and "pattern" in m for m in messages), messages
    assert any(m.startswith(f"{path}:4:") and "tracking.conn_id" in m for m in messages), messages


def test_the_factorys_conn_ids_are_used_as_given_while_a_plain_dag_may_template_them(jinja_dag):
    """Defence in depth beside the schema: the factory's tasks never render their conn ids."""
    for task in jinja_dag.tasks:
        if isinstance(task, SubmitRayJobOperator):
            assert {"ray_conn_id", "storage_conn_id", "mlflow_conn_id"} <= set(task.data_fields), task.task_id
    literal = SubmitRayJobOperator(task_id="t", entrypoint="true", storage_conn_id="{{ 7 * 7 }}", templated_config=False)
    literal.render_template_fields({"params": {}})
    assert literal.storage_conn_id == "{{ 7 * 7 }}"
    templated = SubmitRayJobOperator(task_id="u", entrypoint="true", storage_conn_id="s3_{{ params.env }}")
    templated.render_template_fields({"params": {"env": "prod"}})
    assert templated.storage_conn_id == "s3_prod"
