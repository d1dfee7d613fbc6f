"""One log line per training epoch, in the console and in ``train.log``, whether or not stdout is a terminal."""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only

from pipeline.utils import clock

log = logging.getLogger(__name__)


def as_float(value: Any) -> float | None:
    """A plain float of a scalar tensor or number; None for anything else or NaN."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            return None
        value = value.item()
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


class EpochLog(pl.Callback):
    """At each training epoch's end, log one line::

        epoch 3 [4/21]  train/loss 0.8123  val/map_50 0.4120  best 0.4120 (epoch 3)  62.1 s  145 samples/s

    The train loss is the mean of the training steps' returned losses over the epoch; the monitored metric
    is the value validation logged this epoch (``val not run`` on epochs without validation); the best
    and its epoch survive a resume (the callback's state is in the checkpoint). Throughput comes from the
    ``Throughput`` callback when it is configured (placed before this one).
    """

    def __init__(self, monitor: str | None = None, mode: str = "max") -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"EpochLog: mode must be 'min' or 'max', got '{mode}'")
        self.monitor, self.mode = monitor, mode
        self.best: float | None = None
        self.best_epoch: int | None = None
        self._loss_sum, self._loss_steps = 0.0, 0
        self._start = 0.0
        self._validated = False

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best, self.best_epoch = state_dict.get("best"), state_dict.get("best_epoch")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._loss_sum, self._loss_steps = 0.0, 0
        self._validated = False
        self._start = clock.now()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        value = as_float(loss.detach() if isinstance(loss, torch.Tensor) else loss)
        if value is not None:
            self._loss_sum += value
            self._loss_steps += 1

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seconds = clock.now() - self._start
        value = as_float(trainer.callback_metrics.get(self.monitor)) if self.monitor and self._validated else None
        if value is not None and (self.best is None or (value > self.best if self.mode == "max" else value < self.best)):
            self.best, self.best_epoch = value, trainer.current_epoch
        self.report(trainer, value, seconds)

    @rank_zero_only
    def report(self, trainer: pl.Trainer, value: float | None, seconds: float) -> None:
        total = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else "?"
        parts = [f"epoch {trainer.current_epoch} [{trainer.current_epoch + 1}/{total}]"]
        parts.append(f"train/loss {self._loss_sum / self._loss_steps:.4f}" if self._loss_steps else "train/loss -")
        if self.monitor:
            shown = f"{value:.4f}" if value is not None else ("not logged" if self._validated else "val not run")
            parts.append(f"{self.monitor} {shown}")
            if self.best is not None:
                parts.append(f"best {self.best:.4f} (epoch {self.best_epoch})")
        parts.append(f"{seconds:.1f} s")
        rate = self.samples_per_sec(trainer)
        if rate is not None:
            parts.append(f"{rate:.0f} samples/s" if rate >= 10 else f"{rate:.2g} samples/s")  # 0.42, not 0
        log.info("  ".join(parts))

    @staticmethod
    def samples_per_sec(trainer: pl.Trainer) -> float | None:
        from pipeline.callbacks.throughput import Throughput

        for callback in trainer.callbacks:
            if isinstance(callback, Throughput) and callback.steps:
                elapsed = callback.wait_s + callback.compute_s
                return callback.samples * trainer.world_size / elapsed if elapsed else None
        return None
