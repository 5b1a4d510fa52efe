"""The built-in model, `TabularMLP`: encoded features in, one logit per class out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class TabularMLP(nn.Module):
    """The built-in model: Linear -> ReLU -> Dropout per hidden layer, then one logit per class.

    Rebuilt from model.json as `TabularMLP(num_features, num_classes, hidden_sizes, dropout)`.
    """

    # The class path model.json names for the built-in model: the package, which re-exports it,
    # not this module, so checkpoints written before the package was split load the same way.
    MODEL_CLASS = "airflow_provider_rayops.jobs.modeling:TabularMLP"

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        hidden_sizes: Sequence[int] = (64, 64),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = int(num_features)
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, int(hidden)), nn.ReLU(), nn.Dropout(float(dropout))]
            width = int(hidden)
        layers.append(nn.Linear(width, int(num_classes)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
