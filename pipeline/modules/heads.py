"""Small heads placed on top of backbone features."""

from __future__ import annotations

import torch
import torch.nn as nn


class MLPHead(nn.Module):
    """``Linear -> ReLU -> Dropout`` for each hidden width, then a final ``Linear`` to ``out_dim``."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dims: list[int] | tuple[int, ...] = (), dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden_dims:
            layers += [nn.Linear(in_dim, width), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            in_dim = width
        layers.append(nn.Linear(in_dim, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
