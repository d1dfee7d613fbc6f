"""Batch sampler that keeps the share of positive samples per batch inside a range."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np

from pipeline.data.samplers.epoch_seeded import EpochSampler
from pipeline.utils.errors import UserError


class _CyclingPool:
    """Endless stream of indices: a seeded shuffle of the pool, reshuffled each time it runs out."""

    def __init__(self, indices: np.ndarray, rng: np.random.Generator):
        self.indices = indices
        self.rng = rng
        self.order = rng.permutation(indices)
        self.position = 0

    def take(self, count: int) -> list[int]:
        """The next ``count`` indices of the stream."""
        taken: list[int] = []
        while len(taken) < count:
            if self.position == len(self.order):
                self.order, self.position = self.rng.permutation(self.indices), 0
            chunk = self.order[self.position : self.position + count - len(taken)]
            self.position += len(chunk)
            taken.extend(int(i) for i in chunk)
        return taken


class ShareBatchSampler(EpochSampler):
    """Batches whose share of positives (``labels == positive_label``) is drawn uniformly in a range.

    Each batch draws its number of positives uniformly among the counts k with
    ``min_share <= k / batch_size <= max_share`` (the glasses task uses 20-50% glasses per batch); positives
    and negatives come from separately shuffled pools that restart when exhausted, so the rarer
    class is oversampled as needed. An epoch has ``num_batches`` batches in all ranks together
    (default: ``len(labels) // batch_size``); the sequence depends only on ``seed`` and the epoch set
    with ``set_epoch``. Under DDP pass ``rank`` and ``world_size``: every rank builds the same global
    sequence and keeps every ``world_size``-th batch, so ranks get disjoint parts of equal length
    (with Lightning, set ``use_distributed_sampler=False`` so it does not replace this sampler).
    """

    def __init__(
        self,
        labels: Sequence[int] | np.ndarray,
        batch_size: int,
        min_share: float = 0.2,
        max_share: float = 0.5,
        seed: int = 0,
        num_batches: int | None = None,
        positive_label: int = 1,
        rank: int = 0,
        world_size: int = 1,
    ):
        labels = np.asarray(labels)
        if batch_size < 1:
            raise UserError(f"batch_size: must be at least 1, got {batch_size}")
        if not 0.0 <= min_share <= max_share <= 1.0:
            raise UserError(
                f"min_share/max_share: need 0 <= min_share <= max_share <= 1, got {min_share}, {max_share}"
            )
        self.min_positives = math.ceil(min_share * batch_size - 1e-9)
        self.max_positives = math.floor(max_share * batch_size + 1e-9)
        if self.min_positives > self.max_positives:
            raise UserError(
                f"min_share/max_share: no positive count k with {min_share} <= k/{batch_size} <= {max_share}; "
                "widen the range or change batch_size"
            )
        is_positive = labels == positive_label
        self.positives = np.flatnonzero(is_positive)
        self.negatives = np.flatnonzero(~is_positive)
        if self.max_positives > 0 and len(self.positives) == 0:
            raise UserError(
                f"max_share: batches need positives (label {positive_label}) but the dataset has none"
            )
        if self.min_positives < batch_size and len(self.negatives) == 0:
            raise UserError(f"min_share: batches need negatives but every label is {positive_label}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        total = num_batches if num_batches is not None else len(labels) // batch_size
        self.batches_per_rank = total // world_size
        if self.batches_per_rank < 1:
            raise UserError(
                f"batch_size: {len(labels)} samples give no full batch per rank ({world_size} ranks)"
            )
        super().__init__(seed, rank, world_size)
        self.batch_size = batch_size

    def __len__(self) -> int:
        return self.batches_per_rank

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        positives = _CyclingPool(self.positives, rng)
        negatives = _CyclingPool(self.negatives, rng)
        for index in range(self.batches_per_rank * self.world_size):
            count = int(rng.integers(self.min_positives, self.max_positives + 1))
            batch = rng.permutation(positives.take(count) + negatives.take(self.batch_size - count))
            # Every rank draws every batch so that all ranks walk the same global sequence.
            if index % self.world_size == self.rank:
                yield batch.tolist()
