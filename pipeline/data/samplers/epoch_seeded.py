"""A shuffling sampler whose order depends only on (seed, epoch), so resumed runs replay it exactly."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler):
    """Base of the framework's samplers: an order drawn from ``(seed, epoch)``, sharded over DDP ranks.

    Lightning calls ``set_epoch`` before every training epoch (its own distributed sampler is off:
    these samplers shard themselves by ``rank`` and ``world_size``).
    """

    def __init__(self, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class EpochSeededSampler(EpochSampler):
    """Random permutation of ``range(num_samples)`` drawn from ``seed + epoch``; shards under DDP.

    Lightning calls ``set_epoch`` before every training epoch. Under DDP (``world_size > 1``) the
    permutation is padded to a multiple of ``world_size`` and rank r takes every world_size-th index
    starting at r, as ``DistributedSampler`` does, so ranks see disjoint data.
    """

    def __init__(self, num_samples: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1):
        super().__init__(seed, rank, world_size)
        self.num_samples = num_samples
        self.shuffle = shuffle

    def __len__(self) -> int:
        return -(-self.num_samples // self.world_size)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        total = len(self) * self.world_size
        order += order[: total - len(order)]
        return iter(order[self.rank : total : self.world_size])
