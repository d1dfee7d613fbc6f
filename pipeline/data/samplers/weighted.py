"""Inverse-frequency oversampling: every class is drawn about equally often."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler

from pipeline.data.samplers.epoch_seeded import EpochSampler


def inverse_frequency_weights(labels: Sequence[int] | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Per-sample weight 1 / (count of its class), as a float64 tensor; each class sums to 1."""
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if labels.ndim != 1 or labels.numel() == 0:
        raise ValueError("labels must be a non-empty 1-D sequence of class indices")
    if labels.min() < 0:
        raise ValueError("labels must be non-negative class indices")
    counts = torch.bincount(labels).double()
    return 1.0 / counts[labels]


def inverse_frequency_sampler(
    labels: Sequence[int] | np.ndarray | torch.Tensor,
    num_samples: int | None = None,
    seed: int = 0,
) -> WeightedRandomSampler:
    """Seeded sampler drawing ``num_samples`` (default len(labels)) indices with replacement, classes balanced."""
    weights = inverse_frequency_weights(labels)
    generator = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(
        weights, num_samples=num_samples or len(weights), replacement=True, generator=generator
    )


class InverseFrequencySampler(EpochSampler):
    """Class-balanced draws with replacement, seeded by ``seed + epoch`` and sharded across ranks.

    Every epoch draws ``num_samples`` (default len(labels)) indices with probability 1 / count of
    their class; rank r keeps every world_size-th draw starting at r, so ranks never overlap.
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray | torch.Tensor,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        num_samples: int | None = None,
    ) -> None:
        super().__init__(seed, rank, world_size)
        self.weights = inverse_frequency_weights(labels)
        self.num_samples = num_samples or len(self.weights)

    def __len__(self) -> int:
        return -(-self.num_samples // self.world_size)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        total = len(self) * self.world_size
        draws = torch.multinomial(self.weights, total, replacement=True, generator=generator)
        return iter(draws[self.rank :: self.world_size].tolist())
