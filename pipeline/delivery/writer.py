"""The prediction writer: the answer records of every batch (``pipeline.delivery.answers``) as files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import BasePredictionWriter


class PredictionWriter(BasePredictionWriter):
    """Collects every batch's answers with the items' identity and status; ``finish`` has the record type write
    the files. Several runs may feed it (``run=[a,b,c]``): their heads are combined by the data's ``combine`` rule.
    ``options``: ``quiet`` (no listed paths), ``draw`` (detection images), ``with_decision`` (pair scores)."""

    def __init__(self, out_dir: Path, source: Path, options: dict[str, Any]) -> None:
        super().__init__(write_interval="batch")
        self.out_dir, self.source, self.options = Path(out_dir), Path(source), options
        self.runs: list[list[Any]] = []  # per run, its batches' records
        self.items, self.status, self.data_info = [], [], None

    def on_predict_start(self, trainer: Any, pl_module: Any) -> None:
        self.runs.append([])
        self.items, self.status, self.data_info = [], [], self.data_info or pl_module.data_info

    def write_on_batch_end(self, trainer: Any, pl_module: Any, prediction: Any, batch_indices: Any, batch: Any,
                           batch_idx: int, dataloader_idx: int = 0) -> None:
        self.runs[-1].append(prediction)
        self.items += batch["identity"]
        self.status += batch["status"]

    def finish(self) -> Path:
        """Write the collected answers into ``out_dir``; returns the main output file."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return type(self.runs[0][0]).write(self)
