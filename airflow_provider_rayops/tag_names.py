"""The `rayops.*` vocabulary on MLflow runs, logged models and model versions: one name per fact.

The jobs write these names and the registry, the operators and the demo read them; MLflow alone
answers "why is this model serving?" with them (README: Promotion and lineage). Every name any
part of rayops writes or reads is defined here and nowhere else. Only the standard library:
the jobs, the registry and the Airflow side all use this module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

PREFIX = "rayops."

# How long a tag value may be before it is cut. Run tags: MLflow's REST API takes 8,000
# characters, but SQL stores created by MLflow < 2.x hold 5,000. Model version tags: MLflow 3
# takes 100,000; gate results and approval records stay far below half of that.
RUN_TAG_LIMIT = 5000
VERSION_TAG_LIMIT = 50_000

# -- lineage: who and what produced a training run (copied onto its model version) -------------------
SNAPSHOT_URI = "rayops.snapshot_uri"
SNAPSHOT_HASH = "rayops.snapshot_hash"
CONFIG_HASH = "rayops.config_hash"
CONFIG_GIT_COMMIT = "rayops.config_git_commit"
CONFIG_FILE = "rayops.config_file"
PIPELINE = "rayops.pipeline"
DAG_ID = "rayops.dag_id"
RUN_ID = "rayops.run_id"
TASK_ID = "rayops.task_id"
TRY_NUMBER = "rayops.try_number"
RAY_JOB_ID = "rayops.ray_job_id"


def tag(key: str) -> str:
    """The tag name of a lineage key (the plan's and the jobs' lineage dicts): `snapshot_uri` -> `rayops.snapshot_uri`."""
    return PREFIX + key


# -- a training or tuning run ---------------------------------------------------------------------
RUN_KEY = "rayops.run_key"  # finds the run again on a retry (one run per Airflow task run)
RUN_KIND = "rayops.kind"  # train | tune | trial
RUN_ROOT = "rayops.run_root"  # storage folder of the run's checkpoints
ENTRYPOINT = "rayops.entrypoint"  # the training loop
CHECKPOINT_URI = "rayops.checkpoint_uri"  # the checkpoint the model came from
MODEL_URI = "rayops.model_uri"  # the logged model (models:/m-...)
EPOCHS_COMPLETED = "rayops.epochs_completed"
RESUMED_FROM_EPOCH = "rayops.resumed_from_epoch"
TRAINING_DATA = "rayops.training_data"  # in_memory | materialized | streamed (jobs/train.py training_data)
TRIAL_ID = "rayops.trial_id"
TRIAL_STATUS = "rayops.trial_status"
ERROR = "rayops.error"
BEST_TRIAL = "rayops.best_trial"  # "true" on the best trial's run
BEST_TRIAL_ID = "rayops.best_trial_id"
BEST_RUN_ID = "rayops.best_run_id"
# On a logged model
CHECKPOINT = "rayops.checkpoint"  # the checkpoint a logged model was built from (one model each)
MODEL_FORMAT = "rayops.model_format"

# -- params of a run (MLflow params, not tags) ------------------------------------------------------
NUM_WORKERS = "rayops.num_workers"
USE_GPU = "rayops.use_gpu"
CHECKPOINT_EVERY_EPOCHS = "rayops.checkpoint_every_epochs"
CHECKPOINT_KEEP = "rayops.checkpoint_keep"
MAX_FAILURES = "rayops.max_failures"
MIXED_PRECISION = "rayops.mixed_precision"
SEARCH_PREFIX = "rayops.search."  # rayops.search.<num_samples|max_concurrent|metric|mode|scheduler|grace_period|space>

# -- the evaluation, on the training run -----------------------------------------------------------
EVAL_PREFIX = "rayops.eval."
EVAL_SNAPSHOT_URI = "rayops.eval.snapshot_uri"
EVAL_SNAPSHOT_HASH = "rayops.eval.snapshot_hash"
EVAL_MODEL_URI = "rayops.eval.model_uri"
EVAL_CHAMPION = "rayops.eval.champion"  # "<registered model>/<version>" or "none"
EVAL_PREDICTIONS_URI = "rayops.eval.predictions_uri"  # the model's outputs on the validation split (prediction drift's reference)

# -- on a model version: registration, gates, approval, promotion -----------------------------------
TRAIN_RUN_ID = "rayops.train_run_id"  # the training run the version was registered from
LOGGED_MODEL_URI = "rayops.logged_model_uri"  # the logged model (`models:/m-...`) it was registered from
EVALUATION_URI = "rayops.evaluation_uri"  # runs:/<run>/evaluation.json
REGISTERED_BY = "rayops.registered_by"  # the Airflow task instance that registered it
GATES = "rayops.gates"  # JSON list of GateResult dicts
GATE_PREFIX = "rayops.gate."  # rayops.gate.<i>: "PASS auc >= 0.8: 0.86 >= 0.8 (margin 0.06)"
GATES_PASSED = "rayops.gates_passed"  # "true" / "false"
GATES_FAILED = "rayops.gates_failed"  # "; "-joined names of failed gates, "" when none
GATE_POLICY = "rayops.gate_policy"  # JSON of the gate set the version was judged by
POLICY_HASH = "rayops.policy_hash"  # gate_policy_hash() of it
APPROVAL = "rayops.approval"  # "approved" / "rejected" (by a person) or "policy"
APPROVED_BY = "rayops.approved_by"  # the person's name (also on a rejection: who decided)
APPROVED_BY_ID = "rayops.approved_by_id"
APPROVAL_COMMENT = "rayops.approval_comment"
APPROVED_AT = "rayops.approved_at"  # ISO 8601
APPROVAL_POLICY = "rayops.approval_policy"  # with approval "policy": the gate set that approved
PROMOTED_AT = "rayops.promoted_at"
PROMOTED_BY = "rayops.promoted_by"  # the Airflow task instance that moved the champion alias
REPLACED_VERSION = "rayops.replaced_version"  # the champion it replaced ("" for the first)

# -- on a model version: its deploys to the Serve endpoint (the latest one) ----------------------------
DEPLOY_OUTCOME = "rayops.deploy.outcome"  # serving | rolled_back
DEPLOYED_AT = "rayops.deploy.at"  # ISO 8601
DEPLOYED_BY = "rayops.deploy.by"  # the Airflow task instance that deployed it
DEPLOY_ENDPOINT = "rayops.deploy.endpoint"  # the endpoint URL
DEPLOY_WEIGHTS = "rayops.deploy.weights"  # JSON {version: percent} once the deploy ended
DEPLOY_STEPS = "rayops.deploy.steps"  # JSON list of canary steps: percent, requests, errors, p99_ms, breach

# -- on a model version: the monitor's last drift check of it --------------------------------------
DRIFT_CHECKED_AT = "rayops.drift.checked_at"  # ISO 8601
DRIFT_VERDICT = "rayops.drift.verdict"  # "dataset drift: 3 of 7 columns drifted, prediction drift no"
DRIFT_REPORT_URI = "rayops.drift.report_uri"  # the check's drift.html in storage

# -- lineage: what started the lifecycle run that trained a model ----------------------------------
# The lineage keys `trigger` and `trigger_report` become these tags on the run and its version.
TRIGGER = "rayops.trigger"  # cron | drift | manual | asset | backfill
TRIGGER_REPORT = "rayops.trigger_report"  # with drift: the drift report (drift.html in storage)


def tag_values(tags: Mapping[str, Any], *, limit: int) -> dict[str, str]:
    """Tags as MLflow stores them: None dropped, non-strings as sorted JSON, each cut to `limit`."""
    out = {}
    for key, value in tags.items():
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        out[str(key)] = text[:limit]
    return out
