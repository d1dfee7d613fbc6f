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


def repeat_factor_weights(image_classes: Sequence[Sequence[int]], num_classes: int, threshold: float = 1.0) -> torch.Tensor:
    """Repeat-factor sampling (LVIS, Gupta et al. 2019) for images holding several objects: class ``c``
    in a share ``f_c`` of the images repeats ``max(1, sqrt(threshold / f_c))`` times, and an image as
    often as its rarest class asks (images without objects once). Returns per-image float64 weights."""
    if not image_classes:
        raise ValueError("image_classes must list the classes of at least one image")
    present = np.zeros((len(image_classes), num_classes), dtype=bool)
    for row, classes in enumerate(image_classes):
        present[row, list(classes)] = True
    share = present.mean(axis=0)
    factors = np.where(share > 0, np.maximum(1.0, np.sqrt(threshold / np.maximum(share, 1e-12))), 1.0)
    weights = np.where(present, factors[None, :], 1.0).max(axis=1)
    return torch.as_tensor(weights, dtype=torch.float64)


class WeightedSampler(EpochSampler):
    """Draws with replacement in proportion to per-item ``weights``, seeded by ``seed + epoch`` and sharded
    across ranks: every epoch draws ``num_samples`` (default len(weights)) indices; rank r keeps every
    world_size-th draw starting at r, so ranks never overlap."""

    def __init__(self, weights: torch.Tensor, seed: int = 0, rank: int = 0, world_size: int = 1,
                 num_samples: int | None = None) -> None:
        super().__init__(seed, rank, world_size)
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.num_samples = num_samples or len(self.weights)

    def __len__(self) -> int:
        return -(-self.num_samples // self.world_size)

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        total = len(self) * self.world_size
        draws = torch.multinomial(self.weights, total, replacement=True, generator=generator)
        return iter(draws[self.rank :: self.world_size].tolist())


class InverseFrequencySampler(WeightedSampler):
    """Class-balanced draws: each item weighs 1 / count of its class (``WeightedSampler``)."""

    def __init__(self, labels: Sequence[int] | np.ndarray | torch.Tensor, seed: int = 0, rank: int = 0,
                 world_size: int = 1, num_samples: int | None = None) -> None:
        super().__init__(inverse_frequency_weights(labels), seed, rank, world_size, num_samples)
