"""The README's custom regression loop, run by test_train (which checks the README shows this file's code)."""

from __future__ import annotations

import ray.train
import ray.train.torch
import torch

from airflow_provider_rayops.jobs import builtin
from airflow_provider_rayops.jobs.modeling import FeatureEncoder, ModelSpec


class Linear(torch.nn.Module):
    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(num_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)  # the standardised target; rayops turns it back into the target's units


def linear_regression(config: dict) -> dict:
    if config["task"] != "regression":
        raise ValueError(f"linear_regression fits a regression target; this snapshot's task is {config['task']}")
    ctx = builtin.LoopContext.from_config(config)  # resume, checkpoints and reports
    encoder = FeatureEncoder.from_json(config["encoder"])
    spec = ModelSpec(class_path=f"{__name__}:Linear", kwargs={"num_features": config["num_features"]})
    model = spec.build()
    ctx.restore_model(model)
    model = ray.train.torch.prepare_model(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config["params"].get("lr", 0.05))
    ctx.restore_optimizer(optimizer)
    device = ray.train.torch.get_device()
    x, y = builtin.collect_split(ray.train.get_dataset_shard("train"), device, task="regression")
    for epoch in ctx.epochs_to_run():
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x).reshape(-1), y)
        loss.backward()
        optimizer.step()
        ctx.report(epoch, {"train_loss": loss.item()}, model=model, encoder=encoder, model_spec=spec, optimizer=optimizer)
    return ctx.summary()
