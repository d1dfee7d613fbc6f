"""Figures drawn while training, at a bounded share of its time, those drawn when it ends included.

A figure costs about the same whatever the epoch's length: ``results.png`` with a dozen panels, or a
confusion matrix, takes 0.3-1 s of matplotlib on a CPU, which is nothing beside an 80 s detection epoch
and a fifth of a 4 s classification epoch. ``FigureBudget`` keeps the figures of a training under
``share`` of its time: a figure is drawn during training only while the time spent drawing, plus what
drawing each kind of figure once more at the end will cost (its latest measured time, ``PRIOR_S`` before
its first), stays within ``share`` of the time since training started (the process's own:
``pipeline.utils.clock``). A figure over budget waits, and its callback draws the latest waiting one when
training ends, so the files and TensorBoard always end with the final state (ultralytics draws its
``results.png`` only at the end; this draws as often as the budget allows: a one-minute run at the end only,
a long one every epoch or so). Figures after training (test, reports) are always drawn.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import lightning.pytorch as pl

from pipeline.utils import clock
from pipeline.utils.errors import UserError


class FigureBudget(pl.Callback):
    """``share`` (0 < share <= 1) of the training time for figures; 1 draws each at once."""

    PRIOR_S = 0.5  # what a kind of figure is taken to cost before it was first drawn and timed

    def __init__(self, share: float = 0.02) -> None:
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
            raise UserError(f"callbacks.figure_budget.share: '{share}' is not a number in (0, 1]; "
                            "0.02 draws figures in 2% of the training time, 1 draws every one")
        self.share = float(share)
        self._start: float | None = None
        self._spent = 0.0
        self._cost: dict[str, float] = {}  # kind -> its latest drawing time

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start, self._spent = clock.now(), 0.0

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = None

    def allows(self, kind: str) -> bool:
        """Whether a figure of ``kind`` may be drawn now: always outside training (or with ``share`` 1), else while
        the time spent drawing plus one more drawing of every kind asked for so far (the end's) is within ``share``
        of the time since training started."""
        self._cost.setdefault(kind, self.PRIOR_S)
        if self._start is None or self.share >= 1:
            return True
        return self._spent + sum(self._cost.values()) <= self.share * (clock.now() - self._start)

    @contextlib.contextmanager
    def drawing(self, kind: str) -> Iterator[None]:
        """Times the block as a drawing of ``kind`` (counted as figure time while training)."""
        begin = clock.now()
        try:
            yield
        finally:
            took = clock.now() - begin
            self._cost[kind] = took
            if self._start is not None:
                self._spent += took


UNLIMITED = FigureBudget(1.0)


def figure_budget(trainer: pl.Trainer) -> FigureBudget:
    """The trainer's ``FigureBudget`` callback, or one that allows every figure (no such callback)."""
    return next((c for c in getattr(trainer, "callbacks", ()) if isinstance(c, FigureBudget)), UNLIMITED)
