"""The built-in model, `TabularMLP`: encoded features in, one logit per class (or one value for regression) out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class TabularMLP(nn.Module):
    """The built-in model: Linear -> ReLU -> Dropout per hidden layer, then `num_outputs` outputs
    (one logit per class; one standardised value for regression).

    Rebuilt from model.json as `TabularMLP(num_features, num_outputs, hidden_sizes, dropout)`;
    model.json files written before regression name the width `num_classes`, which is still read.
    """

    # The class path model.json names for the built-in model: the package, which re-exports it,
    # not this module, so checkpoints written before the package was split load the same way.
    MODEL_CLASS = "airflow_provider_rayops.jobs.modeling:TabularMLP"

    def __init__(
        self,
        num_features: int,
        num_outputs: int | None = None,
        hidden_sizes: Sequence[int] = (64, 64),
        dropout: float = 0.1,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        width_out = num_outputs if num_outputs is not None else num_classes
        if width_out is None:
            raise TypeError("TabularMLP needs num_outputs")
        layers: list[nn.Module] = []
        width = int(num_features)
        for hidden in hidden_sizes:
            layers += [nn.Linear(width, int(hidden)), nn.ReLU(), nn.Dropout(float(dropout))]
            width = int(hidden)
        layers.append(nn.Linear(width, int(width_out)))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
