"""The train stage (a Ray job): a snapshot -> a model trained on Ray Train -> an MLflow run.

    python -m airflow_provider_rayops.jobs.train      # args in RAYOPS_JOB_ARGS (JSON)

Job arguments:

    snapshot_uri      the ingest snapshot (file:// or s3://) holding train/validation parquet + manifest
    entrypoint        "module:function" of a per-worker loop, or "rayops.builtin:tabular_mlp"
                      (see jobs/builtin.py for what a loop gets and must report)
    params            the loop's params (YAML train.params); checked here for built-in loops
    scaling           {num_workers: 1, use_gpu: false, resources_per_worker: {}} (config.schema.ScalingSpec)
    checkpoint        {every_epochs: 1, keep: 2} (config.schema.CheckpointSpec)
    max_failures      worker failures Ray Train recovers from, from the latest checkpoint (default 2)
    mixed_precision   auto | bf16 | fp16 | off (GPU only; default auto)
    run_root          storage URI of this training's Ray Train folder; checkpoints land in
                      <run_root>/train/checkpoint_epoch_<NNNNNN>/. The caller keeps it the same
                      for every try of one Airflow task: a retry resumes from the latest checkpoint.
    experiment        MLflow experiment name (the pipeline)
    lineage           tags for the MLflow run, e.g. {config_hash, config_git_commit, dag_id,
                      run_id, task_id, try_number}; the job adds snapshot_uri, snapshot_hash and
                      ray_job_id. Each becomes the tag rayops.<name>.
    run_key           optional: what identifies "the same training" for MLflow (default run_root);
                      a retry with the same key logs into the same MLflow run
    run_name          optional MLflow run name for a new run

Result (the `::rayops-result::` line):

    {"mlflow_run_id", "experiment_id", "model_uri" (MLflow model URI of the logged model),
     "checkpoint_uri" (latest checkpoint folder), "metrics" (the last epoch's), "epochs_completed",
     "resumed_from_epoch" (the checkpoint epoch this job restarted from, after a worker failure or
     an Airflow retry; null when it trained from scratch without interruption), "tracking_uri"}

Data reaches workers through Ray Data: both splits are read from the snapshot, encoded with a
`FeatureEncoder` fitted on the train split (columns `features`, `label`) and materialized in
the object store once, before the workers start (so the workers may take every CPU); the train
split is then sharded evenly across workers.

Bad arguments fail before anything runs, with a `JobInputError` that names the argument; an
entrypoint that does not import fails with the import error first in the message.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_rayops import storage
from airflow_provider_rayops import tag_names as names
from airflow_provider_rayops.jobs import contracts, live_metrics, tracking
from airflow_provider_rayops.jobs.loops import Entrypoint, resolve_entrypoint
from airflow_provider_rayops.jobs.modeling.checkpoints import LoadedCheckpoint, copy_checkpoint_files, load_checkpoint
from airflow_provider_rayops.jobs.modeling.features import FeatureEncoder, FeatureMismatch
from airflow_provider_rayops.jobs.runtime import JobInputError, phase, run_job

if TYPE_CHECKING:
    import pyarrow as pa

RAY_TRAIN_RUN_NAME = "train"
TRAIN_SPLIT = "train"
VALIDATION_SPLIT = "validation"
INPUT_EXAMPLE_ROWS = 5


# -- the loop ----------------------------------------------------------------------------------


# -- the data ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """An ingest snapshot as the train job reads it: its manifest now, its rows when asked.

    `read` reads a whole split into memory (small snapshots only);
    `batches` streams one, `head` reads its first rows, and `rows` comes from the manifest.
    """

    uri: str
    manifest: dict[str, Any]

    @property
    def content_hash(self) -> str:
        return str(self.manifest.get("content_hash") or self.uri.rstrip("/").rsplit("/", 1)[-1])

    def split_uri(self, split: str) -> str:
        return storage.join_uri(self.uri, f"{split}.parquet")

    def rows(self, split: str) -> int:
        return int(self.manifest["rows"][split])

    def batches(self, split: str, *, batch_rows: int = 64 * 1024) -> Iterator[pa.RecordBatch]:
        """The rows of `split`, batch by batch, never the whole split in memory."""
        with self._open(split) as parquet:
            yield from parquet.iter_batches(batch_size=batch_rows)

    def head(self, split: str, rows: int) -> pa.Table:
        import pyarrow as pa

        with self._open(split) as parquet:
            first = next(parquet.iter_batches(batch_size=rows), None)
            return pa.Table.from_batches([first]) if first is not None else parquet.schema_arrow.empty_table()

    def read(self, split: str) -> pa.Table:
        """The whole split, read now (not kept: each call reads it again)."""
        with self._open(split) as parquet:
            return parquet.read()

    @contextlib.contextmanager
    def _open(self, split: str) -> Iterator[Any]:
        import pyarrow.parquet as pq

        fs, path = storage.filesystem(self.split_uri(split))
        try:
            with fs.open_input_file(path) as handle:
                yield pq.ParquetFile(handle)
        except (OSError, storage.StorageError) as exc:
            raise JobInputError(f"job argument 'snapshot_uri'={self.uri!r}: {split} split unreadable: {exc}") from None


def load_snapshot(uri: str) -> Snapshot:
    """The snapshot at `uri` (its manifest read, its splits found); JobInputError when it is not a complete snapshot."""
    uri = storage.resolve_uri(uri)
    try:
        manifest = storage.read_manifest(uri)
        if manifest is None:
            raise JobInputError(
                f"job argument 'snapshot_uri'={uri!r}: no snapshot there (no manifest.json); run the ingest stage first"
            )
        for split in (TRAIN_SPLIT, VALIDATION_SPLIT):
            if not storage.exists(storage.join_uri(uri, f"{split}.parquet")):
                raise storage.StorageNotFoundError(storage.join_uri(uri, f"{split}.parquet"), "no such file")
    except storage.StorageError as exc:
        raise JobInputError(f"job argument 'snapshot_uri'={uri!r}: {exc}") from None
    return Snapshot(uri=uri, manifest=manifest)


def fit_encoder(snapshot: Snapshot) -> FeatureEncoder:
    """The encoder fitted on the train split, read batch by batch."""
    try:
        return FeatureEncoder.fit(snapshot.manifest, snapshot.batches(TRAIN_SPLIT))
    except FeatureMismatch as exc:
        raise JobInputError(f"snapshot {snapshot.uri}: {exc}") from None


# A snapshot whose encoded splits are this small reaches the built-in loop through the object
# store, encoded once by this driver. Through Ray Data it was read again, encoded, materialised
# and split for the workers: about 8 s of a 28 s train stage on 344 rows. Larger snapshots, and
# every user loop (its contract is get_dataset_shard), go through Ray Data.
IN_MEMORY_MAX_BYTES = 256 * 2**20
IN_MEMORY_KEY = "in_memory"
# Ray Data materialises both encoded splits in the object store when they take at most this
# share of it; larger ones are streamed: read, encoded and fed to the workers each epoch
# (`config["data"] == "streamed"`), so a snapshot of any size trains, at the cost of a read per epoch.
MATERIALIZE_MAX_SHARE = 0.5
DATA_KEY = "data"


def encoded_bytes(snapshot: Snapshot, encoder: FeatureEncoder) -> int:
    """What both splits take once encoded: float32 features and an 8-byte label per row."""
    return (snapshot.rows(TRAIN_SPLIT) + snapshot.rows(VALIDATION_SPLIT)) * (encoder.num_features * 4 + 8)


def training_data(
    snapshot: Snapshot, encoder: FeatureEncoder, *, entrypoint: Entrypoint
) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """(Ray Datasets for the trainer, extra loop config): see IN_MEMORY_MAX_BYTES and MATERIALIZE_MAX_SHARE.

    The extra config says how the data comes: `data` is `in_memory` (with `in_memory`, an object
    ref of {split: (features, labels)}), `materialized` or `streamed`."""
    import ray

    size = encoded_bytes(snapshot, encoder)
    store = float(ray.cluster_resources().get("object_store_memory", 0.0))
    if size <= min(IN_MEMORY_MAX_BYTES, MATERIALIZE_MAX_SHARE * store):
        arrays = {}
        for split in (TRAIN_SPLIT, VALIDATION_SPLIT):
            table = snapshot.read(split)
            arrays[split] = (encoder.transform(table), encoder.encode_target(table))
            del table  # the raw rows are not kept once encoded
        if entrypoint.builtin is not None:
            print(f"training data: {size / 2**20:.1f} MiB encoded, in_memory", flush=True)
            return None, {DATA_KEY: IN_MEMORY_KEY, IN_MEMORY_KEY: ray.put(arrays)}
        # A user loop's contract is get_dataset_shard: the same arrays as Ray Datasets made here,
        # with no read or encode tasks (their worker processes cost 8-10 s on a small snapshot).
        print(f"training data: {size / 2**20:.1f} MiB encoded, materialized from memory", flush=True)
        return {split: _dataset_of(*pair) for split, pair in arrays.items()}, {DATA_KEY: "materialized"}
    materialize = size <= MATERIALIZE_MAX_SHARE * store
    how = "materialized" if materialize else "streamed"
    print(f"training data: {size / 2**20:.1f} MiB encoded, {how} (object store {store / 2**20:.0f} MiB)", flush=True)
    datasets = ray_datasets(snapshot, encoder, streamed_in_store=None if materialize else store)
    return datasets, {DATA_KEY: "materialized" if materialize else "streamed"}


def ray_datasets(snapshot: Snapshot, encoder: FeatureEncoder, *, streamed_in_store: float | None = None) -> dict[str, Any]:
    """Both splits as encoded Ray Datasets (columns `features`, `label`): materialized in the
    object store, or, given `streamed_in_store` (the store's bytes), lazy: read and encoded as
    the workers consume them."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    materialize = streamed_in_store is None
    if streamed_in_store is not None:
        # Ray Data's blocks are up to 128 MiB: in a store of a few hundred MiB (what makes a snapshot
        # stream) two of them in flight already spill. Many small blocks flow through it instead.
        block = max(streamed_in_store / 16, 2**20)
        context.target_max_block_size = int(min(context.target_max_block_size or 2**27, block))
    out = {}
    for split in (TRAIN_SPLIT, VALIDATION_SPLIT):
        fs, path = storage.filesystem(snapshot.split_uri(split))
        dataset = ray.data.read_parquet(path, filesystem=fs).map_batches(
            _EncodeBatch(encoder.to_json()), batch_format="pyarrow", zero_copy_batch=True
        )
        if materialize:
            dataset = dataset.materialize()
        elif split == TRAIN_SPLIT:
            # Streamed in storage order, the loop's shuffle buffer (a few batches) would see a source
            # sorted by time or by label as it is: the blocks come in a new random order each epoch.
            dataset = dataset.randomize_block_order()
        out[split] = dataset
    return out


def _dataset_of(features: Any, labels: Any) -> Any:
    """A materialized Ray Dataset of encoded rows, as `_EncodeBatch` makes them (`features`, `label`)."""
    import pyarrow as pa
    import ray.data
    from ray.data.extensions import ArrowTensorArray

    return ray.data.from_arrow(pa.table({"features": ArrowTensorArray.from_numpy(features), "label": labels}))


class _EncodeBatch:
    """Ray Data map: raw snapshot rows -> {"features": float32 (n, d), "label": int64 class index
    or float32 standardised value (n,)}."""

    def __init__(self, encoder_json: Mapping[str, Any]) -> None:
        self.encoder_json = dict(encoder_json)
        self._encoder: FeatureEncoder | None = None

    def __call__(self, batch: pa.Table) -> dict[str, Any]:
        if self._encoder is None:
            self._encoder = FeatureEncoder.from_json(self.encoder_json)
        return {"features": self._encoder.transform(batch), "label": self._encoder.encode_target(batch)}


def loop_config(
    spec: contracts.TrainArgs,
    *,
    params: Mapping[str, Any],
    snapshot: Snapshot,
    encoder: FeatureEncoder,
    mlflow_run_id: str | None = None,
) -> dict[str, Any]:
    """The `config` every worker's loop gets (documented in jobs/builtin.py): `params` (the
    loop's, resolved) with the checkpoint, precision and GPU settings of `spec` (a train or tune
    job's arguments), a new `attempt` id for this run of the job, and the MLflow run that
    receives live metrics (if any)."""
    live = {live_metrics.CONFIG_KEY: {"run_id": mlflow_run_id}} if mlflow_run_id else {}
    return {
        "params": dict(params),
        "epochs": int(params.get("epochs", 1)),
        "checkpoint": {"every_epochs": spec.checkpoint.every_epochs, "keep": spec.checkpoint.keep},
        "mixed_precision": spec.mixed_precision,
        "use_gpu": spec.scaling.use_gpu,
        "encoder": encoder.to_json(),
        "num_features": encoder.num_features,
        "task": encoder.task,
        "num_outputs": encoder.num_outputs,
        "num_classes": encoder.num_classes,
        "classes": encoder.classes,
        "target": encoder.target.name,
        "feature_names": encoder.feature_names,
        "snapshot_uri": snapshot.uri,
        "snapshot_hash": snapshot.content_hash,
        "rows": {TRAIN_SPLIT: snapshot.rows(TRAIN_SPLIT), VALIDATION_SPLIT: snapshot.rows(VALIDATION_SPLIT)},
        "attempt": uuid.uuid4().hex[:12],
        **live,
    }


def ensure_ray() -> None:
    """Connect to the cluster of this Ray job (RAY_ADDRESS), or start a local Ray outside a job.

    The job's own address is handed on to every task and actor of the job: Ray Train starts
    actors (its placement-group cleaner) that find the cluster for the State API by
    auto-detection, which fails on a machine running several Ray instances, and then never
    free the CPUs of a run that was stopped (a trial ASHA ends early).

    So is a short Ray Train controller poll (HEALTH_CHECK_INTERVAL_S), unless the job or the
    cluster sets its own: every `ray.train.report()` waits for the controller's next poll, by
    default 2 s, which made a 40-epoch run on 344 rows take 111.5 s instead of 28.5 s.
    """
    import ray

    if ray.is_initialized():
        return
    job_env = _job_env_vars()
    env_vars = {}
    address = os.environ.get("RAY_ADDRESS", "")
    if address and "://" not in address and "RAY_ADDRESS" not in job_env:
        env_vars["RAY_ADDRESS"] = address
    if HEALTH_CHECK_ENV not in job_env and HEALTH_CHECK_ENV not in os.environ:
        env_vars[HEALTH_CHECK_ENV] = HEALTH_CHECK_INTERVAL_S
    ray.init(runtime_env={"env_vars": env_vars} if env_vars else None, log_to_driver=True, configure_logging=False)


HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
HEALTH_CHECK_INTERVAL_S = "0.05"  # what a report waits at most; 20 polls a second cost little


def _job_env_vars() -> dict[str, str]:
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    try:
        return dict(((json.loads(raw) or {}).get("runtime_env") or {}).get("env_vars") or {}) if raw else {}
    except (ValueError, AttributeError, TypeError):
        return {}


# -- the job -----------------------------------------------------------------------------------


def main(args: Mapping[str, Any] | contracts.TrainArgs) -> dict[str, Any]:
    spec = contracts.TrainArgs.parse(args)
    entrypoint = resolve_entrypoint(spec.entrypoint)
    params = entrypoint.resolve_params(spec.params)
    with phase("snapshot"):
        snapshot = load_snapshot(spec.snapshot_uri)
        encoder = fit_encoder(snapshot)
    entrypoint.check_task(params, encoder.task)
    run_root = storage.resolve_uri(spec.run_root)

    with phase("mlflow"):
        client = tracking.client()
        experiment_id = tracking.ensure_experiment(client, spec.experiment)
    lineage = {
        **spec.lineage,
        "snapshot_uri": snapshot.uri,
        "snapshot_hash": snapshot.content_hash,
        "ray_job_id": tracking.ray_job_id(),
    }
    tags = {
        **tracking.lineage_tags(lineage),
        names.RUN_KIND: "train",
        names.RUN_ROOT: run_root,
        names.ENTRYPOINT: spec.entrypoint,
    }
    with tracking.tracked_run(
        client,
        experiment_id=experiment_id,
        key=tracking.run_key(spec.run_key or run_root),
        params={**params, **_run_settings(spec)},
        run_name=spec.run_name or _default_run_name(spec.lineage),
        tags=tags,
    ) as run_id:
        outcome = fit(
            spec,
            entrypoint=entrypoint,
            params=params,
            snapshot=snapshot,
            encoder=encoder,
            run_root=run_root,
            mlflow_run_id=run_id,
        )
        with phase("log model"):
            result = log_outcome(client, experiment_id=experiment_id, run_id=run_id, outcome=outcome, snapshot=snapshot)
    return result


def _import_torch_export() -> None:
    with contextlib.suppress(Exception):  # an import that fails here fails again, reported, where it is used
        import torch._dynamo
        import torch.export  # noqa: F401


@dataclass
class FitOutcome:
    """What Ray Train left: the latest checkpoint (downloaded), where it lives, and how the run went."""

    checkpoint: LoadedCheckpoint
    checkpoint_uri: str
    checkpoint_name: str
    history: list[dict[str, Any]]
    epochs_completed: int
    resumed_from_epoch: int | None
    data: str = "materialized"  # how the rows reached the workers (training_data)


def fit(
    spec: contracts.TrainArgs,
    *,
    entrypoint: Entrypoint,
    params: Mapping[str, Any],
    snapshot: Snapshot,
    encoder: FeatureEncoder,
    run_root: str,
    mlflow_run_id: str | None = None,
) -> FitOutcome:
    """Run the loop on Ray Train with the YAML's scaling, checkpoint and failure policy; epochs
    reach the MLflow run `mlflow_run_id` as they end."""
    with phase("import ray train"):
        from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchTrainer

    with phase("ray"):
        ensure_ray()
    with phase("training data"):
        datasets, data_config = training_data(snapshot, encoder, entrypoint=entrypoint)
    fs, root_path = storage.filesystem(run_root)
    config = loop_config(spec, params=params, snapshot=snapshot, encoder=encoder, mlflow_run_id=mlflow_run_id)
    trainer = TorchTrainer(
        entrypoint.loop,
        train_loop_config={**config, **data_config},
        scaling_config=ScalingConfig(
            num_workers=spec.scaling.num_workers,
            use_gpu=spec.scaling.use_gpu,
            resources_per_worker=dict(spec.scaling.resources_per_worker) or None,
        ),
        run_config=RunConfig(
            name=RAY_TRAIN_RUN_NAME,
            storage_path=root_path,
            storage_filesystem=fs,
            failure_config=FailureConfig(max_failures=spec.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=spec.checkpoint.keep),
        ),
        datasets=datasets,
        dataset_config=DataConfig(datasets_to_split=[TRAIN_SPLIT]),
    )
    # The model is logged with torch.export once training ends, whose first use imports
    # torch._dynamo and sympy: 2-3 s of a 3 s "log model" phase. This process only waits while
    # Ray Train runs, so it imports them then.
    importing = threading.Thread(target=_import_torch_export, name="rayops-import-torch-export", daemon=True)
    importing.start()
    with phase("ray train"):
        result = trainer.fit()
    importing.join()  # the export must not import what this thread is half-way through importing

    checkpoint = result.checkpoint
    if checkpoint is None:
        raise RuntimeError(
            f"training loop {spec.entrypoint} reported no checkpoint; it must report one following the "
            "artifact contract of jobs/modeling/__init__.py at least at its last epoch"
        )
    name = Path(checkpoint.path).name
    with checkpoint.as_directory() as folder:
        loaded = load_checkpoint(folder)
        keep = Path(tempfile.mkdtemp(prefix="rayops-final-ckpt-"))
        copy_checkpoint_files(folder, keep)
    loaded.path = str(keep)

    # Ray Train V2 (the default) returns a Result with return_value; mypy resolves
    # ray.train.torch.TorchTrainer to the V1 class, whose Result has none.
    returned = result.return_value if isinstance(result.return_value, Mapping) else {}  # type: ignore[attr-defined]
    last_metrics = dict(result.metrics or {})
    history = list(loaded.state.get("history") or returned.get("history") or _dataframe_history(result))
    epochs_completed = int(loaded.state.get("epoch") or last_metrics.get("epoch") or (history[-1]["epoch"] if history else 0))
    resumed = returned.get("resumed_from_epoch", last_metrics.get("resumed_from_epoch"))
    return FitOutcome(
        checkpoint=loaded,
        checkpoint_uri=storage.join_uri(run_root, RAY_TRAIN_RUN_NAME, name),
        checkpoint_name=name,
        history=history,
        epochs_completed=epochs_completed,
        resumed_from_epoch=int(resumed) if resumed is not None else None,
        data=data_config[DATA_KEY],
    )


def log_outcome(client: Any, *, experiment_id: str, run_id: str, outcome: FitOutcome, snapshot: Snapshot) -> dict[str, Any]:
    """Per-epoch metrics, the model (with signature and input example) and final tags on the run."""
    tracking.log_history(client, run_id, outcome.history)
    checkpoint = outcome.checkpoint
    model_uri = tracking.logged_model_uri(experiment_id, run_id, checkpoint=outcome.checkpoint_uri)
    if model_uri is None:
        model_uri = tracking.log_model(
            client,
            run_id,
            experiment_id=experiment_id,
            checkpoint=checkpoint,
            manifest=snapshot.manifest,
            example_rows=snapshot.head(VALIDATION_SPLIT, INPUT_EXAMPLE_ROWS),
            checkpoint_uri=outcome.checkpoint_uri,
            step=outcome.epochs_completed,
        )
    tracking.set_tags(
        client,
        run_id,
        {
            names.CHECKPOINT_URI: outcome.checkpoint_uri,
            names.MODEL_URI: model_uri,
            names.EPOCHS_COMPLETED: outcome.epochs_completed,
            names.RESUMED_FROM_EPOCH: outcome.resumed_from_epoch,
            names.TRAINING_DATA: outcome.data,
        },
    )
    final = {k: v for k, v in (outcome.history[-1] if outcome.history else {}).items() if k != "epoch"}
    return contracts.TrainResult(
        mlflow_run_id=run_id,
        experiment_id=experiment_id,
        tracking_uri=client.tracking_uri,
        model_uri=model_uri,
        checkpoint_uri=outcome.checkpoint_uri,
        metrics=_json_safe(final),
        epochs_completed=outcome.epochs_completed,
        resumed_from_epoch=outcome.resumed_from_epoch,
    ).model_dump(mode="json")


def _run_settings(spec: contracts.TrainArgs) -> dict[str, Any]:
    return {
        names.ENTRYPOINT: spec.entrypoint,
        names.NUM_WORKERS: spec.scaling.num_workers,
        names.USE_GPU: spec.scaling.use_gpu,
        names.CHECKPOINT_EVERY_EPOCHS: spec.checkpoint.every_epochs,
        names.CHECKPOINT_KEEP: spec.checkpoint.keep,
        names.MAX_FAILURES: spec.max_failures,
        names.MIXED_PRECISION: spec.mixed_precision,
    }


def _default_run_name(lineage: Mapping[str, Any]) -> str | None:
    if lineage.get("run_id"):
        return f"train {lineage['run_id']}"
    return None


def _dataframe_history(result: Any) -> list[dict[str, Any]]:
    frame = getattr(result, "metrics_dataframe", None)
    if frame is None or "epoch" not in getattr(frame, "columns", ()):
        return []
    return [{k: v for k, v in row.items() if _finite_number(v)} for row in frame.to_dict("records")]


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _json_safe(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in metrics.items() if _finite_number(v) or isinstance(v, str)}


if __name__ == "__main__":
    run_job(main)


__all__ = [
    "Entrypoint",
    "FitOutcome",
    "Snapshot",
    "fit",
    "fit_encoder",
    "load_snapshot",
    "log_outcome",
    "loop_config",
    "main",
    "ray_datasets",
    "resolve_entrypoint",
]
