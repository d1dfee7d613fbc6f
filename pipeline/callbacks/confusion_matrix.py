"""Confusion-matrix images of any classifier exposing ``confusion_matrices()``: TensorBoard and PNG."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import matplotlib
import numpy as np
import torch

from pipeline.callbacks.image_grid import BestEpochFigures, epoch_name, publish, rendered
from pipeline.utils.errors import printable
from pipeline.utils.trackers import tracker_stage

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the headless backend


def initials(word: str) -> str:
    """``not_wear`` -> ``NW``; words not starting with a letter (``30-59``) stay whole."""
    return "".join(w[:1].upper() for w in word.split("_") if w) if word[:1].isalpha() else word


def short_labels(names: list[str], limit: int = 10) -> list[str]:
    """Tick labels that fit a cell row: names longer than ``limit`` become the initials of their
    ``/``- or ``_``-separated words (numbers kept whole), e.g. ``not_wear/female/30-59`` -> ``NW/F/30-59``;
    duplicates get their class index appended."""
    short = [name if len(name) <= limit else "/".join(map(initials, name.split("/"))) for name in names]
    return [f"{label}#{i}" if short.count(label) > 1 else label for i, label in enumerate(short)]


def render_confusion(matrix: torch.Tensor, class_names: list[str], title: str) -> np.ndarray:
    """The confusion matrix as an HWC uint8 RGB image: rows are the truth, columns the prediction; each
    cell shows its count and, below it, the row-normalised rate (the share of that true class), which
    also sets the cell's colour. Labels are shortened and the figure sized so 18 classes stay legible."""
    counts = matrix.numpy().astype(np.int64)
    rates = counts / np.clip(counts.sum(axis=1, keepdims=True), 1, None)
    n = len(class_names)
    cell = 0.5 if n > 8 else 0.8
    fig, ax = plt.subplots(figsize=(cell * n + 2.2, cell * n + 1.8), dpi=100)
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    labels = short_labels([printable(str(name)) for name in class_names])
    ax.set_xticks(range(n), labels, rotation=90, fontsize=7 if n > 8 else 9)
    ax.set_yticks(range(n), labels, fontsize=7 if n > 8 else 9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    font = 6.5 if n > 8 else 9
    for (row, col), count in np.ndenumerate(counts):
        if count == 0 and row != col:
            continue
        colour = "white" if rates[row, col] > 0.5 else "black"
        ax.text(col, row, f"{count}\n{rates[row, col]:.0%}", ha="center", va="center", fontsize=font, color=colour,
                linespacing=0.9)
    ax.set_title(f"{title}\ncells: count and share of the true class", fontsize=9)
    shortened = sorted({f"{initials(part)}={part}" for name, label in zip(class_names, labels) if name != label
                        for part in name.split("/") if initials(part) != part})
    if shortened:
        fig.text(0.01, 0.005, "  ".join(shortened), fontsize=7)
    fig.tight_layout()
    image = rendered(fig)
    plt.close(fig)
    return image


class ConfusionMatrix(BestEpochFigures):
    """After the validation epochs that improve the monitored metric (see ``BestEpochFigures``) and after
    test: ``<stage>/confusion_<output>`` in TensorBoard and ``<out_dir>/<stage>_confusion_<output>.png``
    (rows: truth, columns: prediction; counts and row rates)."""

    def collect(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> Any:
        # Every process computes: the matrices are summed over the processes' evaluation shards.
        return pl_module.confusion_matrices() if hasattr(pl_module, "confusion_matrices") else None

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str,
             matrices: dict[str, tuple[torch.Tensor, list[str]]]) -> None:
        epoch, step = self.weights_of(trainer, stage)
        for output, (matrix, names) in matrices.items():
            title = f"{stage} {output} ({epoch_name(epoch)})"
            publish(trainer, f"{tracker_stage(stage)}/confusion_{output}", render_confusion(matrix, names, title), step,
                    self.out_dir / f"{stage}_confusion_{output}.png", title)
