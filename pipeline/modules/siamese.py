"""Siamese two-image network: shared encoder, ``|f1 - f2|``, MLP, one logit."""

from __future__ import annotations

import torch
import torch.nn as nn

from pipeline.modules.heads import MLPHead


class SiameseNet(nn.Module):
    """Both images go through the same encoder; the head sees ``|f1 - f2|`` and returns one logit.

    The absolute difference makes the score symmetric in the two images by construction.
    """

    def __init__(self, encoder: nn.Module, hidden_dims: list[int] | tuple[int, ...] = (128,), dropout: float = 0.0):
        super().__init__()
        self.encoder = encoder
        self.head = MLPHead(encoder.num_features, 1, hidden_dims, dropout)

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        features = self.encoder(torch.cat([image1, image2], dim=0))
        f1, f2 = features.chunk(2, dim=0)
        return self.head((f1 - f2).abs()).squeeze(1)
