"""The prediction writer: the answer records of every batch (``pipeline.delivery.answers``) as files."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class PredictionWriter:
    """Collects every batch's answer record with the items' identity and status; ``finish`` has the record type
    write the files. Several runs may feed it (``run=[a,b,c]``, a ``start`` each): their heads are combined by the
    data's ``combine`` rule. ``options``: ``quiet`` (no listed paths), ``draw`` (detection images), ``with_decision``."""

    def __init__(self, out_dir: Path, source: Path, options: dict[str, Any]) -> None:
        self.out_dir, self.source, self.options = Path(out_dir), Path(source), options
        self.runs: list[list[Any]] = []  # per run, its batches' records
        self.items, self.status, self.data_info = [], [], None

    def start(self, data_info: Any) -> None:
        self.runs.append([])
        self.items, self.status, self.data_info = [], [], self.data_info or data_info

    def add(self, record: Any, batch: dict[str, Any]) -> Any:
        self.runs[-1].append(record)
        self.items, self.status = self.items + batch["identity"], self.status + batch["status"]
        return record

    def finish(self) -> Path:
        """Write the collected answers into ``out_dir``; returns the main output file."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return type(self.runs[0][0]).write(self)
