"""Image grids of predictions with truth, logged to TensorBoard and saved as PNG in results/."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from torchvision.utils import make_grid

GREEN, RED = (40, 200, 40), (230, 40, 40)


def denormalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo ``Normalize``: NCHW float -> NCHW uint8 in [0, 255]."""
    mean_t = torch.as_tensor(mean, dtype=images.dtype).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=images.dtype).view(1, -1, 1, 1)
    return ((images * std_t + mean_t).clamp(0, 1) * 255).round().to(torch.uint8)


FONT, FONT_SCALE, LINE_HEIGHT = cv2.FONT_HERSHEY_SIMPLEX, 0.4, 14


def caption_width(text: str) -> int:
    """Pixel width of the widest line of ``text`` as ``annotated_grid`` draws it."""
    return max(cv2.getTextSize(line, FONT, FONT_SCALE, 1)[0][0] for line in text.split("\n"))


def annotated_grid(images: torch.Tensor, labels: Sequence[tuple[str, bool]], min_width: int = 128) -> torch.Tensor:
    """Upscale each NCHW uint8 tile, frame it green (correct) or red (wrong) and caption it above the
    image; captions may hold several lines (``\n``), e.g. truth and prediction. Every tile is widened
    to its grid's longest caption line, so no text is cut off. Returns a CHW grid."""
    width = max([min_width] + [caption_width(text) + 8 for text, _ in labels])
    tiles = []
    for image, (text, correct) in zip(images, labels):
        tile = image.permute(1, 2, 0).numpy()
        scale = max(1, int(np.ceil(min_width / tile.shape[1])))
        tile = cv2.resize(tile, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        lines = text.split("\n")
        side = max(0, width - tile.shape[1])
        tile = cv2.copyMakeBorder(tile, 0, 0, side // 2, side - side // 2, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        colour = GREEN if correct else RED
        tile = cv2.copyMakeBorder(tile, 4 + LINE_HEIGHT * len(lines), 3, 3, 3, cv2.BORDER_CONSTANT, value=colour)
        for row, line in enumerate(lines):
            cv2.putText(tile, line, (4, LINE_HEIGHT * (row + 1) - 1), FONT, FONT_SCALE, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(torch.from_numpy(np.ascontiguousarray(tile)).permute(2, 0, 1))
    return make_grid(tiles, nrow=int(np.ceil(np.sqrt(len(tiles)))), padding=4)


def epoch_name(epoch: int | None) -> str:
    """``epoch 2``: Lightning's 0-based ``current_epoch``, the number in the checkpoint's name (``epoch002.ckpt``)
    and in ``metrics_history.json``, ``results.csv``, the report and the final table."""
    return f"epoch {epoch}" if epoch is not None else "untrained weights"


class TestedWeights(pl.Callback):
    """Knows the epoch and step of the weights a stage evaluates; at test, those of the tested checkpoint (its
    ``epoch`` and ``global_step`` keys: Lightning restores the weights, not the trainer's epoch counter)."""

    _loaded: tuple[int, int] | None = None

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        self._loaded = int(checkpoint["epoch"]), int(checkpoint["global_step"])

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The first such callback logs the tested weights' ``epoch`` and ``step`` with the test metrics: Lightning then
        writes them at that step, with that epoch, in every logger (else at the trainer's last step, or 0)."""
        epoch, step = self.weights_of(trainer, "test")
        if epoch is not None and self is next(c for c in trainer.callbacks if isinstance(c, TestedWeights)):
            pl_module.log_dict({"epoch": float(epoch), "step": float(step)}, batch_size=1)

    def weights_of(self, trainer: pl.Trainer, stage: str) -> tuple[int | None, int]:
        """``(epoch, step)``: validation's current ones; at test the loaded checkpoint's, or without one the last
        trained epoch's (None before any training)."""
        if stage != "test":
            return trainer.current_epoch, trainer.global_step
        if trainer.ckpt_path and self._loaded is not None:
            return self._loaded
        return (trainer.current_epoch - 1 if trainer.current_epoch else None), trainer.global_step

    @staticmethod
    def save_image(path: Path, image: np.ndarray, title: str) -> None:
        """An HWC uint8 RGB image as PNG with ``title`` in its metadata (``PIL.Image.open(path).info["Title"]``)."""
        from matplotlib.image import imsave

        path.parent.mkdir(parents=True, exist_ok=True)
        imsave(path, image, metadata={"Title": title})


class BestEpochFigures(TestedWeights):
    """Figures drawn after the validation epochs that improve the checkpoint's monitored metric (so
    ``results/val_*.png`` and TensorBoard show the model that test uses, and an epoch that does not
    improve costs no drawing), and after test. ``collect`` runs on every process at the epoch's end
    (it may gather across processes); ``draw`` on rank 0, once the epoch's metrics are known."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self._best: float | None = None
        self._pending: Any = None

    def collect(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> Any:
        return stage

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, collected: Any) -> None:
        raise NotImplementedError

    def on_validation_epoch_end(self, trainer, pl_module):
        self._pending = None if trainer.sanity_checking else self.collect(trainer, pl_module, "val")

    def on_validation_end(self, trainer, pl_module):
        pending, self._pending = self._pending, None
        if pending is not None and self.improved(trainer):
            rank_zero_only(self.draw)(trainer, pl_module, "val", pending)

    def on_test_epoch_end(self, trainer, pl_module):
        collected = self.collect(trainer, pl_module, "test")
        if collected is not None:
            rank_zero_only(self.draw)(trainer, pl_module, "test", collected)

    def improved(self, trainer: pl.Trainer) -> bool:
        """Whether this epoch beats the best so far on the checkpoint's monitor (true without one, or while
        it is not finite: the monitor guard then decides)."""
        checkpoint = trainer.checkpoint_callback
        value = trainer.callback_metrics.get(checkpoint.monitor) if checkpoint is not None and checkpoint.monitor else None
        if value is None or not math.isfinite(float(value)):
            return True
        value = float(value)
        if self._best is not None and (value <= self._best if checkpoint.mode == "max" else value >= self._best):
            return False
        self._best = value
        return True


class PredictionGrid(BestEpochFigures):
    """``<stage>/predictions`` in TensorBoard and ``<out_dir>/<stage>_predictions.png`` from the task's
    ``render_examples(stage)`` (validation: the improving epochs, see ``BestEpochFigures``)."""

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, collected: Any) -> None:
        grid = pl_module.render_examples(stage) if hasattr(pl_module, "render_examples") else None
        if grid is None:
            return
        epoch, step = self.weights_of(trainer, stage)
        for logger in trainer.loggers:
            if hasattr(logger.experiment, "add_image"):
                logger.experiment.add_image(f"{stage}/predictions", grid, step)
        self.save_image(self.out_dir / f"{stage}_predictions.png", grid.permute(1, 2, 0).numpy(),
                        f"{stage} predictions ({epoch_name(epoch)})")
