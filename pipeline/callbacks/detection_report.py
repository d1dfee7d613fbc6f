"""A detection run's test report as the field expects it: per-class table, PR curves, F1 curve with the
best score threshold (saved for predict and serve), confusion matrix at IoU 0.5 with background."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.utilities import rank_zero_only
from matplotlib.figure import Figure
from rich.table import Table

from pipeline.callbacks.image_grid import TestedWeights, epoch_name
from pipeline.metrics.detection_report import DetectionReport, Image, evaluate
from pipeline.runs.layout import DETECTION_THRESHOLD as THRESHOLD_FILE
from pipeline.utils.console import wide_console
from pipeline.utils.files import write_json

log = logging.getLogger(__name__)

TABLE_COLUMNS = ("class", "images", "instances", "precision", "recall", "ap50", "ap50_95")


def images_of(mean_ap) -> list[Image]:
    """The images a torchmetrics ``MeanAveragePrecision`` (bbox) was updated with, as numpy arrays; it keeps
    boxes as COCO's xywh, turned back to xyxy here."""
    def arr(tensors: list) -> list[np.ndarray]:
        return [t.detach().cpu().double().numpy() for t in tensors]

    def xyxy(boxes: np.ndarray) -> np.ndarray:
        boxes = boxes.reshape(-1, 4)
        return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1)

    return [Image(xyxy(b), s, lab.astype(int), xyxy(gb), gl.astype(int)) for b, s, lab, gb, gl in zip(
        arr(mean_ap.detection_box), arr(mean_ap.detection_scores), arr(mean_ap.detection_labels),
        arr(mean_ap.groundtruth_box), arr(mean_ap.groundtruth_labels), strict=True)]


def plot_pr_curves(report: DetectionReport, path: Path, tested: str) -> None:
    fig = Figure(figsize=(6, 5), dpi=100)
    ax = fig.subplots()
    present = [c for c in report.classes if not c.absent]
    for c in present:
        recall, precision = c.curve
        ax.plot(np.r_[0, recall], np.r_[1, np.maximum.accumulate(precision[::-1])[::-1]] if len(precision) else [1],
                label=f"{c.name} AP50 {c.ap50:.3f}")
    if present:
        ax.plot([], [], " ", label=f"all classes mAP50 {np.mean([c.ap50 for c in present]):.3f}")
    absent = [c.name for c in report.classes if c.absent]
    title = f"Precision-recall at IoU 0.5 (test, {tested})" + (f"\nabsent from the split: {', '.join(absent)}" if absent else "")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, metadata={"Title": title})


def plot_f1(report: DetectionReport, path: Path, tested: str) -> None:
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.subplots()
    ax.plot(report.thresholds, report.f1, label="all classes")
    ax.scatter([report.best_threshold], [report.best_f1], color="red", zorder=3,
               label=f"best: F1 {report.best_f1:.3f} at score {report.best_threshold:.2f}")
    ax.axvline(report.best_threshold, color="red", alpha=0.3)
    title = f"F1 versus score threshold (test, {tested})"
    ax.set(xlabel="score threshold", ylabel="F1 (IoU 0.5)", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, metadata={"Title": title})


def plot_confusion(report: DetectionReport, path: Path, tested: str) -> None:
    names = [*report.class_names, "background"]
    cm = report.confusion
    size = 1.2 + 0.9 * len(names)
    fig = Figure(figsize=(size + 1, size), dpi=100)
    ax = fig.subplots()
    image = ax.imshow(cm, cmap="Blues")
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if i == j == len(names) - 1:
                continue
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=9,
                    color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    title = f"Detections at IoU 0.5, score >= {report.best_threshold:.2f} (test, {tested})"
    ax.set(xlabel="true", ylabel="predicted", title=title)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, metadata={"Title": title})


def write_table(report: DetectionReport, path: Path) -> None:
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=TABLE_COLUMNS)
        writer.writeheader()
        writer.writerows(report.rows())


def console_table(report: DetectionReport) -> Table:
    table = Table(title=f"Per class, test (precision and recall at score >= {report.best_threshold:.2f}, IoU 0.5)",
                  title_justify="left")
    for column in TABLE_COLUMNS:
        table.add_column(column.replace("ap50_95", "AP50:95").replace("ap50", "AP50"),
                         justify="left" if column == "class" else "right")
    for row in report.rows():
        table.add_row(*(f"{row[c]:.4f}" if isinstance(row[c], float) else str(row[c]) for c in TABLE_COLUMNS))
    return table


class DetectionReportCallback(TestedWeights):
    """At the end of a detection test, from the test metric's own detections and ground truth (before the
    task resets it): ``per_class_report.csv`` (also in ``report.md`` and the console), ``test_pr_curves.png``,
    ``test_f1_threshold.png``, ``test_detection_confusion.png`` and ``detection_threshold.json`` (the score
    threshold of best F1; ``bin/predict.py``/``bin/serve.py`` take it with ``score_threshold=best``).
    Other tasks are left alone."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)

    @rank_zero_only
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        metrics = getattr(pl_module, "test_metrics", None)
        mean_ap = getattr(metrics, "mean_ap", None)
        if mean_ap is None:
            return
        images = images_of(mean_ap)
        if not images:
            return
        report = evaluate(images, pl_module.data_info.class_names)
        epoch, _ = self.weights_of(trainer, "test")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_table(report, self.out_dir / "per_class_report.csv")
        write_json(self.out_dir / THRESHOLD_FILE, {
            "score_threshold": report.best_threshold, "f1": report.best_f1, "iou": 0.5, "split": "test",
            "images": len(images), "checkpoint": trainer.ckpt_path, "epoch": epoch})
        for plot, name in ((plot_pr_curves, "test_pr_curves.png"), (plot_f1, "test_f1_threshold.png"),
                           (plot_confusion, "test_detection_confusion.png")):
            try:
                plot(report, self.out_dir / name, epoch_name(epoch))
            except Exception as error:  # noqa: BLE001 - a figure must not stop the test
                log.warning("%s not written: %s", name, error)
        wide_console().print(console_table(report))
