"""Per-class detection evaluation the field reports (ultralytics' val, COCO): precision-recall curves at IoU 0.5,
AP50 and AP50:95 per class by COCO's rules, an F1-versus-score-threshold curve, and a confusion matrix at IoU 0.5
with a background row and column.

AP follows pycocotools' ``COCOeval`` for boxes of every area with at most ``max_dets`` detections per image
and class: detections matched greedily in score order to the unmatched ground truth of highest IoU, the
precision made monotone, read at 101 recall points. A class with no ground truth in the split is *absent*:
its AP is ``None`` (not -1) and it is neither plotted nor averaged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes ``a`` [N, 4] and ``b`` [M, 4] (COCO's convention: no +1 on widths)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).clip(0).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).clip(0).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


@dataclass
class Image:
    """One image's detections (``boxes`` xyxy, ``scores``, ``labels``) and ground truth (``gt_boxes``, ``gt_labels``)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    gt_boxes: np.ndarray
    gt_labels: np.ndarray


def match_class(images: Sequence[Image], c: int, iou: float, max_dets: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Class ``c`` over all images at IoU ``iou``: its detections' scores and true-positive flags, sorted by
    score (descending), and its number of ground-truth boxes."""
    scores, tps, n_gt = [], [], 0
    for im in images:
        gt = im.gt_boxes[im.gt_labels == c]
        n_gt += len(gt)
        keep = np.flatnonzero(im.labels == c)
        keep = keep[np.argsort(-im.scores[keep], kind="mergesort")][:max_dets]
        if len(keep) == 0:
            continue
        ious = box_iou(im.boxes[keep], gt)
        taken = np.zeros(len(gt), dtype=bool)
        for d in range(len(keep)):
            best, best_iou = -1, min(iou, 1 - 1e-10)
            for g in range(len(gt)):
                if not taken[g] and ious[d, g] >= best_iou:
                    best, best_iou = g, ious[d, g]
            if best >= 0:
                taken[best] = True
            tps.append(best >= 0)
        scores.extend(im.scores[keep].tolist())
    scores_arr, tps_arr = np.asarray(scores, dtype=float), np.asarray(tps, dtype=bool)
    order = np.argsort(-scores_arr, kind="mergesort")
    return scores_arr[order], tps_arr[order], n_gt


def pr_curve(tps: np.ndarray, n_gt: int) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision after each detection (in score order)."""
    tp = np.cumsum(tps)
    fp = np.cumsum(~tps)
    return tp / max(n_gt, 1), tp / np.maximum(tp + fp, np.finfo(float).eps)


def coco_ap(tps: np.ndarray, n_gt: int) -> float:
    """COCO's 101-point interpolated AP of detections in score order with ``tps`` flags."""
    if len(tps) == 0:
        return 0.0
    recall, precision = pr_curve(tps, n_gt)
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    index = np.searchsorted(recall, RECALL_POINTS, side="left")
    return float(np.where(index < len(precision), precision[np.minimum(index, len(precision) - 1)], 0.0).mean())


@dataclass
class ClassResult:
    name: str
    instances: int
    images: int
    ap50: float | None = None
    ap50_95: float | None = None
    precision: float | None = None
    recall: float | None = None
    curve: tuple[np.ndarray, np.ndarray] | None = None  # recall, precision at IoU 0.5

    @property
    def absent(self) -> bool:
        return self.instances == 0


@dataclass
class DetectionReport:
    classes: list[ClassResult]
    thresholds: np.ndarray
    f1: np.ndarray  # F1 over all classes (micro) at each score threshold
    best_threshold: float
    best_f1: float
    confusion: np.ndarray  # [classes + 1 (background), classes + 1]: rows predicted, columns true
    class_names: list[str] = field(default_factory=list)
    num_images: int = 0

    def rows(self) -> list[dict[str, object]]:
        """The per-class table: precision and recall at the best threshold, AP50, AP50:95, instances, images;
        absent classes say so."""
        out = []
        for c in self.classes:
            row: dict[str, object] = {"class": c.name, "images": c.images, "instances": c.instances}
            if c.absent:
                row.update(precision="absent", recall="absent", ap50="absent", ap50_95="absent")
            else:
                row.update(precision=round(c.precision, 4), recall=round(c.recall, 4), ap50=round(c.ap50, 4),
                           ap50_95=round(c.ap50_95, 4))
            out.append(row)
        present = [c for c in self.classes if not c.absent]
        if present:
            out.append({"class": "all", "images": self.num_images,
                        "instances": sum(c.instances for c in present),
                        "precision": round(float(np.mean([c.precision for c in present])), 4),
                        "recall": round(float(np.mean([c.recall for c in present])), 4),
                        "ap50": round(float(np.mean([c.ap50 for c in present])), 4),
                        "ap50_95": round(float(np.mean([c.ap50_95 for c in present])), 4)})
        return out


def evaluate(images: Sequence[Image], class_names: Sequence[str], max_dets: int = 100,
             thresholds: np.ndarray | None = None) -> DetectionReport:
    """Everything in the module docstring for ``images``, classes indexed as ``class_names``."""
    thresholds = np.linspace(0.0, 1.0, 101) if thresholds is None else thresholds
    classes, tp_at, det_at, gt_total = [], np.zeros(len(thresholds)), np.zeros(len(thresholds)), 0
    per_class_tps = {}
    for c, name in enumerate(class_names):
        result = ClassResult(name, instances=int(sum((im.gt_labels == c).sum() for im in images)),
                             images=int(sum(bool((im.gt_labels == c).any()) for im in images)))
        scores, tps, n_gt = match_class(images, c, 0.5, max_dets)
        gt_total += n_gt
        tp_at += np.array([(tps & (scores >= t)).sum() for t in thresholds])
        det_at += np.array([(scores >= t).sum() for t in thresholds])
        per_class_tps[c] = (scores, tps, n_gt)
        if not result.absent:
            result.ap50 = coco_ap(tps, n_gt)
            result.ap50_95 = float(np.mean([coco_ap(match_class(images, c, t, max_dets)[1], n_gt) for t in IOU_THRESHOLDS]))
            result.curve = pr_curve(tps, n_gt) if len(tps) else (np.zeros(0), np.zeros(0))
        classes.append(result)
    precision = tp_at / np.maximum(det_at, 1)
    recall = tp_at / max(gt_total, 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    best = int(np.argmax(f1))
    best_threshold = float(thresholds[best])
    for c, result in enumerate(classes):
        if not result.absent:
            scores, tps, n_gt = per_class_tps[c]
            kept = scores >= best_threshold
            result.precision = float(tps[kept].sum() / kept.sum()) if kept.any() else 0.0
            result.recall = float(tps[kept].sum() / n_gt)
    confusion = confusion_matrix(images, len(class_names), best_threshold)
    return DetectionReport(classes, thresholds, f1, best_threshold, float(f1[best]), confusion, list(class_names),
                           len(images))


def confusion_matrix(images: Sequence[Image], num_classes: int, score_threshold: float, iou: float = 0.5) -> np.ndarray:
    """Rows predicted class, columns true class, the last of each the background: a detection (score >=
    ``score_threshold``) and a ground-truth box pair up, whatever their classes, greedily by IoU (>= ``iou``);
    an unpaired ground truth is a missed box (background row), an unpaired detection a false one (background
    column)."""
    cm = np.zeros((num_classes + 1, num_classes + 1), dtype=np.int64)
    for im in images:
        keep = im.scores >= score_threshold
        boxes, labels = im.boxes[keep], im.labels[keep]
        ious = box_iou(boxes, im.gt_boxes)
        pairs = sorted(((ious[d, g], d, g) for d, g in zip(*np.nonzero(ious >= iou), strict=True)), reverse=True)
        used_d, used_g = set(), set()
        for _, d, g in pairs:
            if d in used_d or g in used_g:
                continue
            used_d.add(d)
            used_g.add(g)
            cm[labels[d], im.gt_labels[g]] += 1
        for g in set(range(len(im.gt_labels))) - used_g:
            cm[num_classes, im.gt_labels[g]] += 1
        for d in set(range(len(labels))) - used_d:
            cm[labels[d], num_classes] += 1
    return cm
