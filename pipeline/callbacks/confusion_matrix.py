"""Confusion-matrix images of any classifier exposing ``confusion_matrices()``: TensorBoard and PNG."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import matplotlib
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from sklearn.metrics import ConfusionMatrixDisplay

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the headless backend


def render_confusion(matrix: torch.Tensor, class_names: list[str], title: str) -> np.ndarray:
    """A row-normalised confusion matrix with counts in the cells, as an HWC uint8 RGB image."""
    counts = matrix.numpy()
    side = max(4.0, 0.45 * len(class_names) + 2)
    fig, ax = plt.subplots(figsize=(side + 1, side), dpi=100)
    rates = counts / np.clip(counts.sum(axis=1, keepdims=True), 1, None)
    ConfusionMatrixDisplay(rates, display_labels=class_names).plot(
        ax=ax, cmap="Blues", values_format=".2f", colorbar=False, xticks_rotation="vertical",
        text_kw={"fontsize": 6 if len(class_names) > 8 else 9},
    )
    ax.set_title(title)
    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return image


class ConfusionMatrix(pl.Callback):
    """After each validation epoch and after test: ``<stage>/confusion_<output>`` in TensorBoard and
    ``<out_dir>/<stage>_confusion_<output>.png`` (rows: truth, normalised; columns: prediction)."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)

    @rank_zero_only
    def _emit(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if trainer.sanity_checking or not hasattr(pl_module, "confusion_matrices"):
            return
        for output, (matrix, names) in pl_module.confusion_matrices().items():
            image = render_confusion(matrix, names, f"{stage} {output} (epoch {trainer.current_epoch})")
            for logger in trainer.loggers:
                if hasattr(logger.experiment, "add_image"):
                    logger.experiment.add_image(f"{stage}/confusion_{output}", image, trainer.global_step, dataformats="HWC")
            self.out_dir.mkdir(parents=True, exist_ok=True)
            plt.imsave(self.out_dir / f"{stage}_confusion_{output}.png", image)

    def on_validation_epoch_end(self, trainer, pl_module):
        self._emit(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer, pl_module):
        self._emit(trainer, pl_module, "test")
