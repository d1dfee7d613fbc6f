"""Per-epoch metrics written to a JSON file in the run's results folder."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_only

from pipeline.utils.files import read_json, write_json

log = logging.getLogger(__name__)


def scalar_metrics(metrics: dict, prefix: str = "") -> dict[str, float]:
    """Plain-float copy of the scalar entries of Lightning's metric dict (NaN kept as None) whose names start
    with ``prefix``."""
    out = {}
    for key, value in metrics.items():
        if not key.startswith(prefix):
            continue
        if hasattr(value, "numel") and value.numel() != 1:
            continue
        number = float(value)
        out[key] = None if math.isnan(number) else number
    return out


class MetricsHistory(pl.Callback):
    """Append ``{"epoch", "step", <metrics>}`` after every validation epoch to ``path`` (a JSON list).

    An existing file is read first, so a resumed run keeps the history of its earlier epochs; one that
    cannot be read (half-written by a crash) is set aside when fitting starts, with a warning, and the
    history restarts: the run stays resumable.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @rank_zero_only
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.path.exists() and not isinstance(read_json(self.path), list):
            broken = self.path.with_name(f"{self.path.name}.broken")
            self.path.replace(broken)
            log.warning("%s cannot be read (half-written?): kept as %s; the history restarts at epoch %d",
                        self.path, broken.name, trainer.current_epoch)

    # on_validation_end, not on_validation_epoch_end: callbacks' epoch-end hooks run before the
    # module's, so metrics a task logs in its own on_validation_epoch_end would arrive an epoch late.
    @rank_zero_only
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        history = read_json(self.path, [])
        history = [row for row in history if row["epoch"] < trainer.current_epoch]
        row = {"epoch": trainer.current_epoch, "step": trainer.global_step}
        row.update(scalar_metrics(trainer.callback_metrics))
        history.append(row)
        write_json(self.path, history)
