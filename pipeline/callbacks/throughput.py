"""Training speed per epoch: samples per second, time outside the training step, peak memory."""

from __future__ import annotations

import logging
import resource
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.data import extract_batch_size

from pipeline.utils import clock

log = logging.getLogger(__name__)


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory allocated on ``device``, or the process's peak resident set size (RSS) on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# Under train/ (speed/ after the losses and the learning rate): TensorBoard and MLflow list the train and val
# groups first (a "throughput" group sorted before them).
TAGS = ("train/speed/samples_per_sec", "train/speed/data_wait_fraction", "train/speed/step_ms",
        "train/speed/peak_memory_mb")


class Throughput(pl.Callback):
    """Log ``train/speed/samples_per_sec`` (all ranks together), ``train/speed/data_wait_fraction``,
    ``train/speed/step_ms`` and ``train/speed/peak_memory_mb`` to the loggers at each training epoch end.

    The wait is the time between one training batch's end and the next one's start: fetching the next
    batch from the DataLoader, moving it to the device and the per-batch hooks. The rest is compute
    (forward, backward, optimiser step). On GPUs nothing is synchronised per step (that would stop the
    host from queueing the next step while the device works): work still queued when a step's hooks
    return is counted where the host waits for it, and in compute at the epoch's end.
    """

    def __init__(self) -> None:
        self.samples = 0
        self.steps = 0
        self.wait_s = 0.0
        self.compute_s = 0.0
        self._batch_start = self._batch_end = 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.samples, self.steps, self.wait_s, self.compute_s = 0, 0, 0.0, 0.0
        if pl_module.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(pl_module.device)
        self._batch_end = clock.now()

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        self._batch_start = clock.now()
        self.wait_s += self._batch_start - self._batch_end
        # Tasks' batches are dicts with an "image" tensor; asking Lightning to guess among detection's
        # lists of boxes warns "ambiguous collection" on every run.
        image = batch.get("image") if isinstance(batch, dict) else None
        self.samples += len(image) if isinstance(image, torch.Tensor) else extract_batch_size(batch)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._batch_end = clock.now()
        self.compute_s += self._batch_end - self._batch_start
        self.steps += 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if pl_module.device.type == "cuda" and self.steps:
            torch.cuda.synchronize(pl_module.device)
            self.compute_s += clock.now() - self._batch_end
        self.report(trainer, pl_module)

    def summary(self, world_size: int, device: torch.device) -> dict[str, float]:
        """The epoch's figures so far."""
        elapsed = self.wait_s + self.compute_s
        return dict(zip(TAGS, (
            self.samples * world_size / elapsed if elapsed else 0.0,
            self.wait_s / elapsed if elapsed else 0.0,
            1000 * elapsed / self.steps if self.steps else 0.0,
            peak_memory_mb(device),
        )))

    @rank_zero_only
    def report(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log the epoch's figures."""
        if not self.steps:
            return
        values = self.summary(trainer.world_size, pl_module.device)
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.global_step)
        log.debug("epoch %d: %.0f samples/s, %.1f ms/step, %.0f%% of it waiting for data, peak memory %.0f MB",
                 trainer.current_epoch, values[TAGS[0]], values[TAGS[2]],
                 100 * values[TAGS[1]], values[TAGS[3]])
