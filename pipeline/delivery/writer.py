"""The prediction writer: the records of the tasks' ``predict_step`` (``pipeline.utils.contracts``) as files."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from pipeline.data.combine import combine_runs, submission_writer
from pipeline.data.formats.verification import write_pair_scores
from pipeline.data.io import load_image
from pipeline.trainers.detection import draw_detections
from pipeline.utils.contracts import ClassScores, Detections, PairScores, decide_and_report
from pipeline.utils.errors import UserError
from pipeline.utils.files import write_csv

log = logging.getLogger(__name__)


def write_rows(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    log.info("wrote %d rows to %s", len(rows), path)
    return write_csv(path, header, rows)


class PredictionWriter(BasePredictionWriter):
    """Collects every batch's answers with the items' identity and status; ``finish`` writes the files.
    Several runs may feed it (``run=[a,b,c]``): their heads are combined by the data's ``combine`` rule.
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
        write = {ClassScores: self.write_classes, Detections: self.write_detections, PairScores: self.write_pairs}
        return write[type(self.runs[0][0])]()  # a KeyError: predict_step returned no record of contracts.py

    def write_classes(self) -> Path:
        """``predictions.csv`` (``path,label,probability``; an unusable image: its status), or the dataset's
        submission for its eval folder; prints the paths of the ``listed`` class."""
        last: ClassScores = self.runs[-1][0]
        probs, names = self.main_probabilities()
        decided, reported = decide_and_report(probs, last.threshold)
        image_ids = [item.get("image_id") for item in self.items]
        submit = submission_writer(names) if all(image_ids) else None
        if submit is not None:
            return submit(self.out_dir, image_ids, decided.tolist())
        rows = [[item["path"], status, ""] if status else [item["path"], names[c], f"{q:.6f}"]
                for item, status, c, q in zip(self.items, self.status, decided.tolist(), reported.tolist(), strict=True)]
        for path, label, _ in rows if last.listed and not self.options.get("quiet") else ():
            if label == last.listed:
                print(path)
        log.info("%s", ", ".join(f"{n} {label}" for label, n in Counter(row[1] for row in rows).items()))
        return write_rows(self.out_dir / "predictions.csv", ["path", "label", "probability"], rows)

    def main_probabilities(self) -> tuple[torch.Tensor, list[str]]:
        """The main output's probabilities and classes: of the one run, or its heads' combination over runs."""
        merged: dict[str, torch.Tensor] = {}
        for run in self.runs:
            merged.update({name: torch.cat([r.probabilities[name] for r in run]) for name in run[0].probabilities})
        if len(self.runs) == 1:
            main = next(iter(self.runs[0][0].probabilities))
            return merged[main], self.runs[0][0].classes[main]
        merged.pop("label", None)
        return combine_runs(merged, self.data_info)

    def write_detections(self) -> Path:
        """``detections.csv`` (a row per box) and, unless ``draw=false``, ``images/<relative path>.png``."""
        detections = [det for record in self.runs[0] for det in record.detections]
        classes = self.runs[0][0].classes
        usable = [(item, det) for item, status, det in zip(self.items, self.status, detections, strict=True) if not status]
        rows = [[item["path"], classes[c], f"{s:.4f}", *(f"{v:.1f}" for v in box)] for item, det in usable
                for c, s, box in zip(det["labels"].tolist(), det["scores"].tolist(), det["boxes"].tolist(), strict=True)]
        for item, det in usable if self.options.get("draw", True) else ():
            self.save_drawing(Path(item["path"]), det, classes)
        log.info("%d boxes in %d of %d usable images", len(rows), sum(len(det["labels"]) > 0 for _, det in usable), len(usable))
        if usable and not rows:
            log.warning("no box scored above the score threshold in any of the %d images: lower options.score_threshold "
                        "or check the run's val/map_50", len(usable))
        return write_rows(self.out_dir / "detections.csv", ["path", "label", "score", "xmin", "ymin", "xmax", "ymax"], rows)

    def save_drawing(self, path: Path, detections: dict[str, torch.Tensor], classes: list[str]) -> None:
        """``out_dir/images/<path relative to the input folder>.png``, sub-folders kept."""
        relative = path.relative_to(self.source) if self.source.is_dir() else Path(path.name)
        target = (self.out_dir / "images" / relative).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        drawn = draw_detections(torch.from_numpy(load_image(path)).permute(2, 0, 1).contiguous(), detections, classes)
        cv2.imwrite(str(target), cv2.cvtColor(drawn.permute(1, 2, 0).numpy(), cv2.COLOR_RGB2BGR))

    def write_pairs(self) -> Path:
        """``predictions.csv`` for named pairs (``path1,path2,<probability|similarity>,same``; a pair with an
        unusable image: empty score, its status as ``same``), or for the
        consecutive rows of a pairs file ``pair_scores.csv`` (``pair_id,similarity``; ``with_decision``: ``same,threshold``)."""
        if any(self.status) and "pair_id" in self.items[0]:
            raise UserError(f"input: {sum(map(bool, self.status))} pair(s) hold an image that cannot be used (see the warnings above)")
        scores, metric = torch.cat([record.scores for record in self.runs[0]]), self.runs[0][0].metric
        threshold, same = self.runs[0][0].threshold, (scores >= self.runs[0][0].threshold).tolist()
        if "pair_id" in self.items[0]:
            decision = (same, threshold) if self.options.get("with_decision") else (None, None)
            write_pair_scores(self.out_dir / "pair_scores.csv", scores.tolist(), *decision)
            return self.out_dir / "pair_scores.csv"
        rows = [[item["path1"], item["path2"], "", status] if status else [item["path1"], item["path2"], f"{p:.6f}", int(s)]
                for item, status, p, s in zip(self.items, self.status, scores.tolist(), same, strict=True)]
        log.info("%s", ", ".join(f"{n} {answer}" for answer, n in Counter(
            {1: "same", 0: "different"}.get(row[3], row[3]) for row in rows).items()) + f" ({metric} >= {threshold:.4f})")
        return write_rows(self.out_dir / "predictions.csv", ["path1", "path2", metric, "same"], rows)
