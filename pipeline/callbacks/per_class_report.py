"""``results/per_class_report.csv`` and ``.json`` after a test: precision, recall, F1 and support per class of
every output of a classifier exposing ``confusion_matrices()``; other tasks are left alone."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_only

from pipeline.runs.table import write_dict_rows
from pipeline.utils.files import write_json


def per_class_report(matrices: dict[str, tuple[torch.Tensor, list[str]]]) -> list[dict[str, Any]]:
    """Rows ``output, class, precision, recall, f1, support`` from confusion matrices [true, predicted]."""
    rows = []
    for output, (matrix, names) in matrices.items():
        matrix = matrix.double()
        tp = matrix.diag()
        predicted, support = matrix.sum(0), matrix.sum(1)
        precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
        recall = torch.where(support > 0, tp / support.clamp(min=1), torch.zeros_like(tp))
        f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), torch.zeros_like(tp))
        for i, name in enumerate(names):
            rows.append({"output": output, "class": name, "precision": round(float(precision[i]), 6),
                         "recall": round(float(recall[i]), 6), "f1": round(float(f1[i]), 6), "support": int(support[i])})
    return rows


class PerClassReport(pl.Callback):
    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Every process computes: the matrices are summed over the processes' test shards.
        rows = per_class_report(pl_module.confusion_matrices()) if hasattr(pl_module, "confusion_matrices") else []
        if rows:
            self.write(rows)

    @rank_zero_only
    def write(self, rows: list[dict[str, Any]]) -> None:
        write_dict_rows(self.out_dir / "per_class_report.csv", rows)
        write_json(self.out_dir / "per_class_report.json", rows)
