"""Reseeding at each epoch start, so a run resumed from an epoch-end checkpoint replays exactly."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.fabric.utilities.seed import seed_everything


class EpochReseed(pl.Callback):
    """Seed python, numpy and torch (and dataloader workers) with ``seed + epoch`` at every epoch start.

    Lightning's checkpoints hold the model, optimiser, scheduler and loop counters but not the global
    random state, which dropout, augmentation and worker seeds draw from. Reseeding from the epoch
    number makes epoch k+1 of a resumed run start from the same state as in an uninterrupted run.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def _reseed(self, trainer: pl.Trainer) -> None:
        seed_everything(self.seed + trainer.current_epoch, workers=True, verbose=False)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Lightning skips on_train_epoch_start for the epoch it restarts into after an end-of-epoch
        # checkpoint, so a resumed run reseeds here as well (a no-op repeat for fresh runs).
        self._reseed(trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reseed(trainer)
