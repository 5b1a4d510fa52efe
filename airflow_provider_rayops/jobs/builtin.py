"""The built-in training loop, and the per-worker helpers any rayops training loop may use.

`train.entrypoint: rayops.builtin:<name>` in YAML names a loop defined here: the module part
`rayops.builtin` stands for this module (`airflow_provider_rayops.jobs.builtin`), and `<name>`
must be one of `BUILTIN_LOOPS`. Any other entrypoint is a plain `module:function` import path.

A training loop is a standard Ray Train per-worker function `loop(config)`. The train job
calls it on every worker with this `config`:

    params           the YAML `train.params` (the built-in loop's defaults filled in)
    epochs           params["epochs"]: the last epoch to train (built-in default 10; 1 for a
                     user loop whose params name none)
    checkpoint       {"every_epochs": N, "keep": K}: report a checkpoint every N epochs and
                     at the last epoch; Ray Train keeps the last K in storage
    mixed_precision  auto | bf16 | fp16 | off (applies on GPU only)
    use_gpu          whether workers have a GPU
    encoder          FeatureEncoder JSON (modeling.FeatureEncoder.from_json): the features
    num_features     width of the encoded input
    task             classification or regression (the snapshot's)
    num_outputs      width of the model's output: num_classes, or 1 for regression
    num_classes, classes   the target's classes (a label is an index into classes); 0 and []
                     for regression, where a label is the standardised target (float32;
                     FeatureEncoder.decode_target gives the target's units)
    target, feature_names  the raw target column and the encoded input names
    snapshot_uri, snapshot_hash   where the data came from
    rows             {"train": n, "validation": n} rows of the snapshot's splits
    attempt          an id of this train job invocation (recorded with each resume)
    data             how the rows come: "in_memory" (below), "materialized" (Ray Datasets held
                     in the object store) or "streamed" (Ray Datasets read and encoded as they
                     are consumed, each epoch: the snapshot is too large for the object store,
                     train.MATERIALIZE_MAX_SHARE; a loop should not collect a whole split then)
    in_memory        built-in loops only, small snapshots only: an object ref of
                     {"train": (features, labels), "validation": (features, labels)} numpy
                     arrays, given instead of Ray Datasets (train.IN_MEMORY_MAX_BYTES)
    mlflow           {"run_id"}: the run `LoopContext.report` sends each epoch's
                     metrics to while training runs (jobs/live_metrics.py); absent in Tune trials

Data: `ray.train.get_dataset_shard("train")` is this worker's shard of the train split
(Ray Data, split evenly across workers); `get_dataset_shard("validation")` is the whole
validation split. Both have columns `features` (float32 [num_features]) and `label` (int64
class index; float32 standardised value for regression).

What a loop must do:

- call `ray.train.report(metrics)` once per epoch on every worker, with `metrics["epoch"]`;
- report a checkpoint folder that follows the artifact contract in `modeling` (use
  `modeling.save_checkpoint`) at least at its last epoch: the job logs the model from the
  latest checkpoint;
- resume: start from `ray.train.get_checkpoint()` when there is one (a worker restarted by
  Ray Train, or the job retried by Airflow with the same run_root).

`LoopContext` does all of that bookkeeping: `ctx = LoopContext.from_config(config)`,
`ctx.restore_model(model)`, `ctx.restore_optimizer(opt)`, then for each epoch in
`ctx.epochs_to_run()` train and `ctx.report(epoch, metrics, model=..., ...)`; return
`ctx.summary()`.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from airflow_provider_rayops.jobs.live_metrics import LiveMetrics
from airflow_provider_rayops.jobs.loops import TABULAR_MLP_DEFAULTS, tabular_mlp_params  # noqa: F401 (loop API)
from airflow_provider_rayops.jobs.modeling.checkpoints import (
    LoadedCheckpoint,
    ModelSpec,
    load_checkpoint,
    save_checkpoint,
    unwrap_model,
)
from airflow_provider_rayops.jobs.modeling.features import FeatureEncoder
from airflow_provider_rayops.jobs.modeling.network import TabularMLP

CHECKPOINT_DIR_PREFIX = "checkpoint_epoch_"


def checkpoint_dir_name(epoch: int) -> str:
    return f"{CHECKPOINT_DIR_PREFIX}{epoch:06d}"


# -- per-worker bookkeeping -----------------------------------------------------------------


@dataclass
class LoopContext:
    """Resume, checkpoint and report bookkeeping for one worker of a training run."""

    config: Mapping[str, Any]
    epochs: int
    every_epochs: int
    rank: int
    world_size: int
    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    resumes: list[dict[str, Any]] = field(default_factory=list)
    restored: LoadedCheckpoint | None = None
    live: LiveMetrics | None = None  # rank 0 sends each epoch's metrics to MLflow as it reports them

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> LoopContext:
        """Read the worker's rank and the checkpoint to resume from (if any)."""
        import ray.train

        context = ray.train.get_context()
        ctx = cls(
            config=config,
            epochs=int(config.get("epochs") or config.get("params", {}).get("epochs") or 1),
            every_epochs=int(config.get("checkpoint", {}).get("every_epochs", 1)),
            rank=context.get_world_rank(),
            world_size=context.get_world_size(),
        )
        if ctx.rank == 0:
            ctx.live = LiveMetrics.from_config(config)
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            with checkpoint.as_directory() as folder:
                ctx.restored = load_checkpoint(folder, with_optimizer=True)
            state = ctx.restored.state
            ctx.start_epoch = int(state.get("epoch", 0))
            ctx.history = [dict(h) for h in state.get("history", []) if int(h.get("epoch", 0)) <= ctx.start_epoch]
            ctx.resumes = list(state.get("resumes", [])) + [{"epoch": ctx.start_epoch, "attempt": config.get("attempt")}]
        return ctx

    @property
    def resumed_from_epoch(self) -> int | None:
        """The epoch of the checkpoint this worker started from; None when it started fresh."""
        return self.start_epoch if self.restored is not None else None

    def epochs_to_run(self) -> range:
        return range(self.start_epoch + 1, self.epochs + 1)

    def restore_model(self, model: nn.Module) -> None:
        """Load the restored weights into `model` (call before wrapping it for DDP)."""
        if self.restored is not None:
            unwrap_model(model).load_state_dict(self.restored.model.state_dict())

    def restore_optimizer(self, optimizer: torch.optim.Optimizer, scaler: Any = None) -> None:
        """Load the restored optimizer (and grad scaler) state; call once the model is on its device."""
        saved = self.restored.optimizer_state if self.restored is not None else None
        if not saved:
            return
        optimizer.load_state_dict(saved["optimizer"])
        if scaler is not None and saved.get("scaler"):
            scaler.load_state_dict(saved["scaler"])

    def checkpoint_due(self, epoch: int) -> bool:
        return epoch % self.every_epochs == 0 or epoch == self.epochs

    def report(
        self,
        epoch: int,
        metrics: Mapping[str, Any],
        *,
        model: nn.Module,
        encoder: FeatureEncoder,
        model_spec: ModelSpec | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        scaler: Any = None,
    ) -> None:
        """Report this epoch's metrics on every worker; rank 0 adds a checkpoint when one is due and,
        once Ray Train has the report, queues the metrics for the MLflow run (never waiting for it)."""
        entry = {"epoch": int(epoch), **{k: v for k, v in metrics.items() if k != "epoch"}}
        self.history.append(entry)
        self._report(entry, model=model, encoder=encoder, model_spec=model_spec, optimizer=optimizer, scaler=scaler)
        if self.live is not None:
            self.live.send(epoch, entry)

    def _report(
        self,
        entry: Mapping[str, Any],
        *,
        model: nn.Module,
        encoder: FeatureEncoder,
        model_spec: ModelSpec | None,
        optimizer: torch.optim.Optimizer | None,
        scaler: Any,
    ) -> None:
        import ray.train

        epoch = int(entry["epoch"])
        reported = dict(entry)
        if self.resumed_from_epoch is not None:
            reported["resumed_from_epoch"] = self.resumed_from_epoch
        if not self.checkpoint_due(epoch):
            ray.train.report(reported)
            return
        name = checkpoint_dir_name(epoch)
        if self.rank != 0:
            ray.train.report(reported, checkpoint=None, checkpoint_dir_name=name)
            return
        with tempfile.TemporaryDirectory(prefix="rayops-ckpt-") as tmp:
            save_checkpoint(
                tmp,
                model=model,
                encoder=encoder,
                model_spec=model_spec,
                optimizer=optimizer,
                scaler=scaler,
                state={"epoch": int(epoch), "history": self.history, "resumes": self.resumes},
            )
            ray.train.report(reported, checkpoint=ray.train.Checkpoint.from_directory(tmp), checkpoint_dir_name=name)

    def summary(self) -> dict[str, Any]:
        """What a loop returns (rank 0's return value reaches the train job); the last epochs'
        metrics reach MLflow first."""
        if self.live is not None:
            self.live.close()
        return {
            "epochs_completed": self.history[-1]["epoch"] if self.history else self.start_epoch,
            "resumed_from_epoch": self.resumed_from_epoch,
            "history": self.history,
            "resumes": self.resumes,
        }


# -- GPU-friendly training pieces (also used without Ray by benchmarks/train_scaling.py) -----


def precision_context(mode: str, device: torch.device) -> tuple[Callable[[], contextlib.AbstractContextManager], Any, str]:
    """(autocast factory, GradScaler or None, the precision used) for `mode` on `device`.

    Mixed precision applies on CUDA only: "auto" is bf16 where the GPU supports it, else fp16;
    fp16 gets a GradScaler. On CPU every mode trains in float32.
    """
    if device.type != "cuda" or mode == "off":
        return contextlib.nullcontext, None, "fp32"
    if mode == "auto":
        mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = torch.bfloat16 if mode == "bf16" else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype is torch.float16 else None
    return (lambda: torch.autocast(device_type="cuda", dtype=dtype)), scaler, mode


def label_dtype(task: str) -> Any:
    """numpy dtype of the labels: class indices, or standardised values for regression."""
    return np.float32 if task == "regression" else np.int64


def collect_split(
    iterator: Any, device: torch.device, *, batch_size: int = 65536, task: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A Ray Data shard (or any iterator with `iter_batches`) as (features, labels) tensors on `device`;
    labels as `task`'s (int64 classes, float32 values), or as the data has them when no task is given."""
    features, labels = [], []
    dtype = label_dtype(task) if task is not None else None
    for batch in iterator.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=1):
        features.append(np.asarray(batch["features"], dtype=np.float32))
        labels.append(np.asarray(batch["label"], dtype=dtype))
    return to_device(
        np.concatenate(features) if features else np.zeros((0, 0), np.float32),
        np.concatenate(labels) if labels else np.zeros((0,), dtype or np.int64),
        device,
    )


def to_device(features: np.ndarray, labels: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Both arrays as tensors on `device` (labels keep their dtype: int64 classes or float32 values)."""
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(labels))
    if device.type == "cuda":
        x, y = x.pin_memory(), y.pin_memory()
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def device_batches(
    x: torch.Tensor, y: torch.Tensor, *, batch_size: int, steps: int, generator: torch.Generator
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`steps` shuffled batches of a split that already sits on the device (no host round trip)."""
    order = torch.randperm(x.shape[0], device=x.device, generator=generator)
    for step in range(steps):
        index = order[step * batch_size : (step + 1) * batch_size]
        yield x.index_select(0, index), y.index_select(0, index)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    *,
    autocast: Callable[[], contextlib.AbstractContextManager],
    scaler: Any,
    device: torch.device,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pass over `batches`; returns (summed loss, samples) as device tensors: no host sync per step."""
    model.train()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    seen = torch.zeros((), dtype=torch.float64, device=device)
    for xb, yb in batches:
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = loss_fn(model(xb), yb)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        n = yb.shape[0]
        loss_sum += loss.detach().double() * n
        seen += n
    return loss_sum, seen


def loss_function(task: str, loss: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The training loss of `params.loss` for the task kind: cross-entropy for classes; mean
    squared error or Huber on the standardised target for regression (its output is (n, 1))."""
    if task != "regression":
        return nn.functional.cross_entropy
    pointwise = nn.functional.huber_loss if loss == "huber" else nn.functional.mse_loss

    def regression_loss(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return pointwise(outputs.float().reshape(-1), labels.float())

    return regression_loss


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    num_classes: int,
    autocast: Callable[[], contextlib.AbstractContextManager],
    batch_size: int = 65536,
    task: str = "classification",
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = nn.functional.cross_entropy,
    target_std: float = 1.0,
) -> dict[str, float]:
    """Validation metrics on data already on the device, with one host sync: val_loss, then
    val_accuracy and (binary targets) val_auc; for regression val_rmse and val_mae in the
    target's units (`target_std` undoes the standardisation) and val_r2."""
    model.eval()
    if x.shape[0] == 0:
        return {}
    outputs = []
    for start in range(0, x.shape[0], batch_size):
        with autocast():
            outputs.append(model(x[start : start + batch_size]).float())
    out = torch.cat(outputs)
    values = {"val_loss": loss_fn(out, y)}
    if task == "regression":
        error = out.reshape(-1).double() - y.double()
        spread = ((y.double() - y.double().mean()) ** 2).sum()
        values["val_rmse"] = error.pow(2).mean().sqrt() * target_std
        values["val_mae"] = error.abs().mean() * target_std
        values["val_r2"] = torch.where(spread > 0, 1 - error.pow(2).sum() / spread, torch.full_like(spread, float("nan")))
    else:
        values["val_accuracy"] = (out.argmax(dim=1) == y).double().mean()
        if num_classes == 2:
            values["val_auc"] = roc_auc(torch.softmax(out, dim=1)[:, 1], y)
    stacked = torch.stack([v.double() for v in values.values()]).tolist()
    return {k: float(v) for k, v in zip(values, stacked, strict=True)}


def roc_auc(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Area under the ROC curve (Mann-Whitney, ties get average ranks), computed on the device."""
    _unique, inverse, counts = torch.unique(scores, sorted=True, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    average_rank = ends - (counts.double() - 1) / 2
    ranks = average_rank[inverse]
    positive = labels == 1
    n_pos = positive.sum().double()
    n_neg = labels.numel() - n_pos
    auc = (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return torch.where((n_pos > 0) & (n_neg > 0), auc, torch.full_like(auc, float("nan")))


# -- the built-in loop ---------------------------------------------------------------------------


def tabular_mlp(config: Mapping[str, Any]) -> dict[str, Any]:
    """Ray Train loop of the built-in model: `TabularMLP` on the encoded snapshot, AdamW;
    cross-entropy for classification, MSE (or Huber, `params.loss`) on the standardised target
    for regression.

    Reports per epoch: epoch, train_loss, val_loss, then val_accuracy and val_auc (binary
    targets) or val_rmse, val_mae and val_r2 (regression), epoch_time_s and samples_per_s (all
    workers, training steps only), resumed_from_epoch after a resume. Validation runs on rank 0
    over the whole validation split.
    """
    import ray.train
    import ray.train.torch

    params = tabular_mlp_params(config.get("params", {}))
    ctx = LoopContext.from_config({**config, "epochs": params["epochs"]})
    encoder = FeatureEncoder.from_json(config["encoder"])
    device = ray.train.torch.get_device()
    torch.manual_seed(params["seed"])

    spec = ModelSpec(
        class_path=TabularMLP.MODEL_CLASS,
        kwargs={
            "num_features": encoder.num_features,
            "num_outputs": encoder.num_outputs,
            "hidden_sizes": params["hidden_sizes"],
            "dropout": params["dropout"],
        },
    )
    model = spec.build()
    ctx.restore_model(model)
    model = ray.train.torch.prepare_model(model)
    autocast, scaler, _ = precision_context(config.get("mixed_precision", "auto"), device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params["lr"], weight_decay=params["weight_decay"])
    ctx.restore_optimizer(optimizer, scaler)

    if not list(ctx.epochs_to_run()):
        return ctx.summary()  # a retry of a finished run: nothing left to train

    batch_size = params["batch_size"]
    x_train: torch.Tensor | None
    y_train: torch.Tensor | None
    task = encoder.task
    loss_fn = loss_function(task, params["loss"])
    in_memory = ray.get(config["in_memory"]) if config.get("in_memory") is not None else None
    train_shard = None if in_memory is not None else ray.train.get_dataset_shard("train")
    if in_memory is not None:  # a small snapshot, from the object store: every rank-th row is this worker's
        features, labels = in_memory["train"]
        x_train, y_train = to_device(
            np.array(features[ctx.rank :: ctx.world_size]), np.array(labels[ctx.rank :: ctx.world_size]), device
        )
        local_rows = x_train.shape[0]
    elif params["cache_on_device"] is True or (params["cache_on_device"] == "auto" and config.get("data") != "streamed"):
        x_train, y_train = collect_split(train_shard, device, task=task)
        local_rows = x_train.shape[0]
    else:
        x_train = y_train = None
        local_rows = int(config.get("rows", {}).get("train", 0)) // ctx.world_size
    rows = _all_min(local_rows, device, ctx.world_size)
    if rows == 0:
        raise RuntimeError(f"worker {ctx.rank} got no training rows; the train split is too small for {ctx.world_size} workers")
    steps = math.ceil(rows / batch_size)
    x_val = y_val = None
    if ctx.rank == 0 and in_memory is not None:
        x_val, y_val = to_device(np.array(in_memory["validation"][0]), np.array(in_memory["validation"][1]), device)
    elif ctx.rank == 0:
        x_val, y_val = collect_split(ray.train.get_dataset_shard("validation"), device, task=task)

    generator = torch.Generator(device=device)
    for epoch in ctx.epochs_to_run():
        generator.manual_seed(params["seed"] * 100_003 + epoch * 1_009 + ctx.rank)
        started = time.perf_counter()
        if x_train is not None:
            assert y_train is not None  # cached together with x_train
            batches = device_batches(x_train[:rows], y_train[:rows], batch_size=batch_size, steps=steps, generator=generator)
        else:
            batches = _streamed_batches(train_shard, batch_size=batch_size, steps=steps, device=device, task=task)
        loss_sum, seen = train_epoch(model, optimizer, batches, autocast=autocast, scaler=scaler, device=device, loss_fn=loss_fn)
        totals = _all_sum(torch.stack([loss_sum, seen]), ctx.world_size).tolist()  # the epoch's one sync
        elapsed = time.perf_counter() - started
        metrics: dict[str, Any] = {
            "train_loss": totals[0] / max(totals[1], 1.0),
            "epoch_time_s": elapsed,
            "samples_per_s": totals[1] / elapsed if elapsed > 0 else 0.0,
        }
        if ctx.rank == 0:
            assert x_val is not None and y_val is not None  # collected above on rank 0
            metrics.update(
                evaluate(
                    unwrap_model(model), x_val, y_val, num_classes=encoder.num_classes, autocast=autocast,
                    task=task, loss_fn=loss_fn, target_std=encoder.target.std,
                )
            )  # fmt: skip
        ctx.report(epoch, metrics, model=model, encoder=encoder, model_spec=spec, optimizer=optimizer, scaler=scaler)
    return ctx.summary()


def _streamed_batches(
    shard: Any, *, batch_size: int, steps: int, device: torch.device, task: str = "classification"
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    batches = shard.iter_torch_batches(
        batch_size=batch_size,
        dtypes={"features": torch.float32, "label": torch.float32 if task == "regression" else torch.int64},
        device=device,
        prefetch_batches=2,
        local_shuffle_buffer_size=batch_size * 4,
    )
    for step, batch in enumerate(batches):
        if step >= steps:  # every worker takes the same number of steps, or DDP would hang
            break
        yield batch["features"], batch["label"]


def _all_sum(values: torch.Tensor, world_size: int) -> torch.Tensor:
    if world_size > 1:
        import torch.distributed as dist

        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def _all_min(value: int, device: torch.device, world_size: int) -> int:
    if world_size <= 1:
        return int(value)
    import torch.distributed as dist

    tensor = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return int(tensor.item())


BUILTIN_LOOPS: dict[str, Callable[[Mapping[str, Any]], Any]] = {"tabular_mlp": tabular_mlp}
