"""P x K batch sampler for metric learning: P identities per batch, K images of each."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from pipeline.data.samplers.epoch_seeded import EpochSampler
from pipeline.utils.errors import UserError


class PKBatchSampler(EpochSampler):
    """Batches of ``p`` distinct identities x ``k`` images each, for a DataLoader's ``batch_sampler``.

    Each epoch shuffles the identities and deals them out ``p`` at a time, ``passes`` times over, so
    every identity appears at most ``passes`` times per epoch; an epoch has
    ``passes * (len(identities) // (p * world_size))`` batches per rank. (Several passes make an
    epoch long enough to be worth a validation when there are few identities.)
    Images of an identity (real and fake alike) are drawn without replacement, topped up with
    replacement when the identity has fewer than ``k``. Under DDP pass ``rank`` and ``world_size``:
    ranks get disjoint identity groups and the same number of batches (turn off the trainer's own
    distributed sampler). Call ``set_epoch`` each epoch; same seed and epoch give the same batches.
    """

    def __init__(
        self,
        identities: Sequence[int],
        p: int,
        k: int,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        passes: int = 1,
    ):
        if p < 1 or k < 1 or passes < 1:
            raise UserError(f"PK sampler: p={p}, k={k} and passes={passes} must all be at least 1")
        if not 0 <= rank < world_size:
            raise UserError(f"PK sampler: rank {rank} is outside world_size {world_size}")
        labels = np.asarray(identities)
        unique, inverse = np.unique(labels, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        self.groups = np.split(order, np.cumsum(np.bincount(inverse))[:-1])
        if len(unique) < p * world_size:
            raise UserError(
                f"PK sampler: {len(unique)} identities cannot fill p={p} per batch on {world_size} "
                "rank(s); lower p"
            )
        self.p, self.k = p, k
        self.batch_size = p * k
        super().__init__(seed, rank, world_size)
        self.passes = passes

    def __len__(self) -> int:
        return self.passes * self._batches_per_pass()

    def _batches_per_pass(self) -> int:
        return len(self.groups) // (self.p * self.world_size)

    def _draw(self, group: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``k`` sample indices of one identity: a permutation, topped up with replacement if short."""
        chosen = rng.permutation(group)[: self.k]
        if len(chosen) < self.k:
            chosen = np.concatenate([chosen, rng.choice(group, self.k - len(chosen), replace=True)])
        return chosen

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        per_pass = self._batches_per_pass() * self.world_size
        # Draw every batch of every rank from the one shared stream so the ranks stay disjoint.
        for _ in range(self.passes):
            order = rng.permutation(len(self.groups))
            for b in range(per_pass):
                batch = [self._draw(self.groups[g], rng) for g in order[b * self.p : (b + 1) * self.p]]
                if b % self.world_size == self.rank:
                    yield np.concatenate(batch).tolist()
