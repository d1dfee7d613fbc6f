"""``results/run_state.json``: which process trains a run, so ``bin/runs.py`` can tell running runs
from interrupted ones (finished runs have ``results/metrics.json``; failed ones are marked by ``Run``)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_only

from pipeline.runs.table import write_state


class RunState(pl.Callback):
    """Write ``{"state": "running", "pid", "host", "since"}`` when fitting starts and
    ``"interrupted"`` when it stops on an exception (Ctrl-C included)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @rank_zero_only
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        write_state(self.path, "running")

    @rank_zero_only
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        write_state(self.path, "interrupted")
