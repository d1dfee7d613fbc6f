"""Figures drawn while training, at a bounded share of its time.

A figure costs about the same whatever the epoch's length: ``results.png`` with a dozen panels, or a
confusion matrix, takes 0.3-1 s of matplotlib on a CPU, which is nothing beside an 80 s detection epoch
and a fifth of a 4 s classification epoch. ``FigureBudget`` keeps the figures drawn during training
under ``share`` of the time since training started: a figure over budget waits, and its callback draws
the latest waiting one when training ends, so the files and TensorBoard always end with the final
state (ultralytics draws its ``results.png`` only at the end; this draws as often as the budget allows).
Figures after training (test, reports) are always drawn.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import lightning.pytorch as pl

from pipeline.utils.errors import UserError


class FigureBudget(pl.Callback):
    """``share`` (0 < share <= 1) of the training time for figures; 1 draws each at once."""

    def __init__(self, share: float = 0.02) -> None:
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
            raise UserError(f"callbacks.figure_budget.share: '{share}' is not a number in (0, 1]; "
                            "0.02 draws figures in 2% of the training time, 1 draws every one")
        self.share = float(share)
        self._start: float | None = None
        self._spent = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start, self._spent = time.perf_counter(), 0.0

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = None

    def allows(self) -> bool:
        """Whether a figure may be drawn now: always outside training, else while the time spent drawing
        is within ``share`` of the time since training started."""
        return self._start is None or self._spent <= self.share * (time.perf_counter() - self._start)

    @contextlib.contextmanager
    def drawing(self) -> Iterator[None]:
        """Counts the time of the block as figure time."""
        begin = time.perf_counter()
        try:
            yield
        finally:
            self._spent += time.perf_counter() - begin


UNLIMITED = FigureBudget(1.0)


def figure_budget(trainer: pl.Trainer) -> FigureBudget:
    """The trainer's ``FigureBudget`` callback, or one that allows every figure (no such callback)."""
    return next((c for c in getattr(trainer, "callbacks", ()) if isinstance(c, FigureBudget)), UNLIMITED)
