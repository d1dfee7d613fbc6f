"""Detection metrics: COCO mAP (torchmetrics) and per-class precision/recall/F1 at a score threshold.

Inputs follow torchmetrics' ``MeanAveragePrecision``: per image, predictions ``{"boxes": [N, 4] xyxy,
"scores": [N], "labels": [N]}`` and targets ``{"boxes": [M, 4], "labels": [M]}``, labels 0-based.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from copy import deepcopy

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.detection import MeanAveragePrecision
from torchvision.ops import box_iou

# faster_coco_eval prints its 12-line COCO summary at INFO on every compute(); keep train.log readable.
logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)

# Per-class AP of a class with neither ground truth nor predictions (COCO's convention).
MISSING = -1.0


def greedy_match(pred_boxes: Tensor, pred_scores: Tensor, gt_boxes: Tensor, iou_threshold: float) -> Tensor:
    """True for each prediction matched to a ground-truth box, matching greedily by descending score.

    Each prediction, best score first, takes the still unmatched ground-truth box it overlaps most;
    it is a true positive when that IoU is at least ``iou_threshold``. All inputs are of one class.
    """
    matched = torch.zeros(len(pred_boxes), dtype=torch.bool)
    if len(pred_boxes) == 0 or len(gt_boxes) == 0:
        return matched
    ious = box_iou(pred_boxes.float(), gt_boxes.float())
    taken = torch.zeros(len(gt_boxes), dtype=torch.bool)
    for i in torch.argsort(pred_scores, descending=True, stable=True).tolist():
        overlaps = ious[i].masked_fill(taken, -1.0)
        best = int(overlaps.argmax())
        if overlaps[best] >= iou_threshold:
            matched[i] = taken[best] = True
    return matched


class PrecisionRecallF1(Metric):
    """Per-class precision, recall and F1 of detections scoring at least ``score_threshold``.

    A detection is a true positive when ``greedy_match`` pairs it with a ground-truth box of its class
    at IoU >= ``iou_threshold``; unmatched detections are false positives, unmatched ground truth
    false negatives. precision = TP / (TP + FP), recall = TP / (TP + FN), F1 their harmonic mean
    (0 when undefined).
    """

    full_state_update = False

    def __init__(self, num_classes: int, score_threshold: float = 0.5, iou_threshold: float = 0.5, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.score_threshold = score_threshold
        self.iou_threshold = iou_threshold
        for name in ("tp", "fp", "fn"):
            self.add_state(name, default=torch.zeros(num_classes, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: Sequence[dict[str, Tensor]], targets: Sequence[dict[str, Tensor]]) -> None:
        for pred, target in zip(preds, targets, strict=True):
            keep = pred["scores"] >= self.score_threshold
            boxes, scores, labels = pred["boxes"][keep], pred["scores"][keep], pred["labels"][keep]
            for c in range(self.num_classes):
                is_pred, is_gt = labels == c, target["labels"] == c
                matched = greedy_match(
                    boxes[is_pred], scores[is_pred], target["boxes"][is_gt], self.iou_threshold
                )
                true_positives = int(matched.sum())
                self.tp[c] += true_positives
                self.fp[c] += int(is_pred.sum()) - true_positives
                self.fn[c] += int(is_gt.sum()) - true_positives

    def compute(self) -> dict[str, Tensor]:
        tp, fp, fn = self.tp.double(), self.fp.double(), self.fn.double()
        precision = torch.where(tp + fp > 0, tp / (tp + fp).clamp(min=1), 0.0)
        recall = torch.where(tp + fn > 0, tp / (tp + fn).clamp(min=1), 0.0)
        f1 = torch.where(
            precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12), 0.0
        )
        return {"precision": precision.float(), "recall": recall.float(), "f1": f1.float()}


class GatheredMeanAveragePrecision(MeanAveragePrecision):
    """``MeanAveragePrecision`` whose per-image lists are gathered whole from every process, in rank order.

    torchmetrics gathers them image by image, which needs the same number of images on every process
    (otherwise its collectives fall out of step) and interleaves them. Evaluation shards
    (``eval_batches``) are contiguous and may differ by a batch, so each process's list is appended
    after the previous one's: the single-process order.
    """

    def _sync_dist(self, dist_sync_fn=None, process_group=None) -> None:
        group = process_group or self.process_group
        local = {name: [_moved(t, "cpu") for t in getattr(self, name)] for name in self._reductions}
        gathered: list[dict | None] = [None] * dist.get_world_size(group)
        dist.all_gather_object(gathered, local, group=group)
        for name in local:
            setattr(self, name, [_moved(t, self.device) for part in gathered for t in part[name]])


def _moved(item, device):
    """A tensor on ``device`` (pickled through the CPU); other state items (mask encodings) as they are."""
    return item.to(device) if isinstance(item, Tensor) else item


class DetectionMetrics(nn.Module):
    """mAP@50:95, mAP@50, per-class AP and AP50 (COCO via torchmetrics) plus per-class P/R/F1 at a threshold.

    ``compute()`` returns floats keyed ``map``, ``map_50``, ``precision``/``recall``/``f1`` (means over
    classes that have ground truth) and ``ap/<class>``, ``ap50/<class>``, ``precision/<class>``,
    ``recall/<class>``, ``f1/<class>``, each key starting with ``prefix``; a class absent from both
    predictions and targets has AP -1.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        score_threshold: float = 0.5,
        iou_threshold: float = 0.5,
        backend: str = "faster_coco_eval",
        prefix: str = "",
    ):
        super().__init__()
        self.class_names = list(class_names)
        self.prefix = prefix
        self.mean_ap = GatheredMeanAveragePrecision(
            box_format="xyxy", iou_type="bbox", class_metrics=True, extended_summary=True, backend=backend
        )
        self.prf = PrecisionRecallF1(len(self.class_names), score_threshold, iou_threshold)

    def update(self, preds: Sequence[dict[str, Tensor]], targets: Sequence[dict[str, Tensor]]) -> None:
        self.mean_ap.update(preds, targets)
        self.prf.update(preds, targets)

    def detections_seen(self) -> int:
        """Predicted boxes given to ``update`` since the last reset (this process)."""
        return sum(int(scores.numel()) for scores in self.mean_ap.detection_scores)

    def reset(self) -> None:
        self.mean_ap.reset()
        self.prf.reset()

    def clone(self, prefix: str = "") -> DetectionMetrics:
        """A fresh copy whose ``compute()`` keys start with ``prefix`` (as ``MetricCollection.clone``)."""
        copy = deepcopy(self)
        copy.prefix = prefix
        copy.reset()
        return copy

    def compute(self) -> dict[str, float]:
        coco = self.mean_ap.compute()
        prf = self.prf.compute()
        out = {"map": float(coco["map"]), "map_50": float(coco["map_50"])}
        ap = {c: MISSING for c in range(len(self.class_names))}
        ap50 = dict(ap)
        # precision: [IoU thresholds, recall points, classes, areas, max detections]; area "all", 100 dets.
        precision = coco["precision"][0, :, :, 0, -1]
        for k, c in enumerate(torch.atleast_1d(coco["classes"]).tolist()):
            ap[c] = float(torch.atleast_1d(coco["map_per_class"])[k])
            points = precision[:, k]
            ap50[c] = float(points[points > -1].mean()) if (points > -1).any() else MISSING
        has_gt = (self.prf.tp + self.prf.fn) > 0
        for key in ("precision", "recall", "f1"):
            out[key] = float(prf[key][has_gt].mean()) if has_gt.any() else 0.0
        for c, name in enumerate(self.class_names):
            out[f"ap/{name}"], out[f"ap50/{name}"] = ap[c], ap50[c]
            for key in ("precision", "recall", "f1"):
                out[f"{key}/{name}"] = float(prf[key][c])
        return {f"{self.prefix}{key}": value for key, value in out.items()}
