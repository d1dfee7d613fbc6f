"""The learning rate under ``train/lr``: Lightning's ``LearningRateMonitor`` names it ``lr-<Optimizer>``, a group of
its own that TensorBoard's Time Series and MLflow list before the train and val curves (alphabetical order)."""

from __future__ import annotations

import re

import lightning.pytorch as pl
from lightning.pytorch.callbacks import LearningRateMonitor

LR_NAME = re.compile(r"^lr-(?P<optimizer>[^/-]+(?:-\d+)?)(?P<rest>.*)$")


def lr_tag(name: str, optimizers: int = 1) -> str:
    """``lr-AdamW`` -> ``train/lr``, ``lr-AdamW/pg2`` -> ``train/lr_pg2``, ``lr-AdamW-momentum`` -> ``train/lr-momentum``;
    with several optimizers their names stay: ``lr-SGD`` -> ``train/lr_SGD``."""
    match = LR_NAME.match(name)
    if not match:
        return name
    optimizer = f"_{match['optimizer']}" if optimizers > 1 else ""
    return f"train/lr{optimizer}{match['rest'].replace('/', '_')}"


class LearningRate(LearningRateMonitor):
    """``LearningRateMonitor`` whose figures are logged as ``train/lr`` (see ``lr_tag``), the same name in every tracker."""

    def _extract_stats(self, trainer: pl.Trainer, interval: str) -> dict[str, float]:
        stats = super()._extract_stats(trainer, interval)
        return {lr_tag(name, len(trainer.optimizers)): value for name, value in stats.items()}
