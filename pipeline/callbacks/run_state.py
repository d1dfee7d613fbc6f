"""``results/run_state.json``: which process trains a run, so ``bin/runs.py`` can tell running runs
from interrupted ones (finished runs have ``results/metrics.json``)."""

from __future__ import annotations

import os
import socket
from datetime import datetime
from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_only

from pipeline.utils.files import write_json


class RunState(pl.Callback):
    """Write ``{"state": "running", "pid", "host", "since"}`` when fitting starts and
    ``"interrupted"`` when it stops on an exception (Ctrl-C included)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _write(self, state: str) -> None:
        write_json(self.path, {"state": state, "pid": os.getpid(), "host": socket.gethostname(),
                               "since": datetime.now().isoformat(timespec="seconds")}, indent=None)

    @rank_zero_only
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._write("running")

    @rank_zero_only
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._write("interrupted")
