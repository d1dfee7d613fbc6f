"""Object detection task (face-mask detection): torchvision FCOS/RetinaNet on a timm backbone, COCO mAP."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from pipeline.callbacks.image_grid import detection_grid, truth_and_prediction
from pipeline.delivery.answers import Detections, ExportSpec, Output
from pipeline.metrics.detection import DetectionMetrics
from pipeline.modules.detectors import DetectorForExport
from pipeline.trainers.base import BaseTask, build_model
from pipeline.utils.errors import UserError


def resolve_class_weights(
    spec: str | Sequence[float] | None, class_counts: Sequence[int] | None, num_classes: int
) -> list[float] | None:
    """``None``, an explicit list, or ``"balanced"``: ``total / (num_classes * count)`` per class (sklearn's rule)."""
    if spec is None or not isinstance(spec, str):
        return None if spec is None else [float(w) for w in spec]
    if spec != "balanced":
        raise UserError(f"task.class_weights: '{spec}' is not 'balanced', a list of weights or null")
    if not class_counts or len(class_counts) != num_classes:
        raise UserError("task.class_weights: 'balanced' needs the training split's class_counts from the data module")
    counts = np.maximum(np.asarray(class_counts, dtype=np.float64), 1.0)
    return (counts.sum() / (num_classes * counts)).round(4).tolist()


class DetectionTask(BaseTask):
    """One-stage detector trained on its own loss dict; mAP@50:95, mAP@50, per-class AP and P/R/F1 per epoch.

    The model group's ``min_score`` is the detector's own cut (low, so mAP sees the whole ranking); ``score_threshold``
    is the operating point for precision/recall/F1, the drawn examples, predictions and export.
    """

    def __init__(
        self,
        *args: Any,
        score_threshold: float = 0.5,
        class_weights: str | Sequence[float] | None = None,
        example_count: int = 8,
        **kwargs: Any,
    ) -> None:
        self.score_threshold = float(score_threshold)
        self.class_weights = list(class_weights) if class_weights is not None and not isinstance(class_weights, str) else class_weights
        super().__init__(*args, example_count=example_count, **kwargs)
        # Kept with the checkpoint, so load_from_checkpoint rebuilds the same detector.
        self.hparams.update({"score_threshold": self.score_threshold, "class_weights": self.class_weights})

    def build_net(self) -> nn.Module:
        """The model group's detector (``_target_`` of configs/model/fcos.yaml, retinanet.yaml, fcos_coco.yaml) for
        this data's classes, image size and ``class_weights``."""
        names, (_, height, width) = self.data_info.class_names, self.data_info.input_size
        weights = resolve_class_weights(self.class_weights, self.data_info.class_counts, len(names))
        return build_model(self.model_cfg, num_classes=len(names), image_size=(height, width), class_weights=weights)

    def build_loss(self) -> None:
        """None: the detector computes its own losses (focal classification, box regression, centre-ness)."""
        return None

    def build_metrics(self) -> DetectionMetrics:
        return DetectionMetrics(self.data_info.class_names, score_threshold=self.score_threshold)

    def forward(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        """Detections (letterboxed pixels) for a batch of letterboxed images in [0, 1]."""
        return self.net(list(images))

    # --- training and evaluation ------------------------------------------------------------------
    def model_step(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Training: the detector's losses; evaluation: its detections. Both with the ``target`` boxes."""
        targets = [{"boxes": b, "labels": y} for b, y in zip(batch["boxes"], batch["labels"], strict=True)]
        if self.training:
            losses = self.net(list(batch["image"]), targets)
            return {"loss": sum(losses.values()), **{f"loss_{name}": value for name, value in losses.items()}, "target": targets}
        return {"detections": self(batch["image"]), "target": targets}

    def update_metrics(self, stage: str, out: dict[str, Any]) -> None:
        """mAP and P/R/F1 follow the detections of val/test; they are logged at the epoch's end."""
        if stage != "train":
            self.metrics[stage].update(out["detections"], out["target"])

    def on_validation_epoch_end(self) -> None:
        """mAP and P/R/F1 of the val or test epoch (``compute`` gathers every process's states), then fresh metrics."""
        for metrics in (self.metrics["val"], self.metrics["test"]):
            if metrics.mean_ap.update_called:
                self.log_dict(metrics.compute(), prog_bar=False)
                metrics.reset()

    on_test_epoch_end = on_validation_epoch_end

    def detections_seen(self, stage: str) -> int:
        """Boxes the detector emitted (above ``min_score``) in the current ``stage`` epoch so far, all processes together."""
        seen = torch.tensor(self.metrics[stage].detections_seen(), device=self.device)
        return int(self.trainer.strategy.reduce(seen, reduce_op="sum"))

    def above_threshold(self, detections: dict[str, torch.Tensor], threshold: float | None = None) -> dict[str, torch.Tensor]:
        keep = detections["scores"] >= (self.score_threshold if threshold is None else threshold)
        return {key: value[keep] for key, value in detections.items()}

    def example_classes(self, batch: dict[str, Any], out: dict[str, Any]) -> list[list[int]]:
        """The classes of each image's true boxes, so the drawn examples show every class (images without boxes
        only where there is room)."""
        return [sorted(set(target["labels"].tolist())) for target in out["target"]]

    def render_examples(self, stage: str) -> torch.Tensor | None:
        """Each example twice: its true boxes and its predictions above ``score_threshold``, labelled with the class
        (and score) in the class's colour, above a legend of the class colours."""
        ex = self.examples.get(stage)
        if not ex:
            return None
        names = self.data_info.class_names
        tiles = [truth_and_prediction((image * 255).round().to(torch.uint8), truth, self.above_threshold(det), names)
                 for image, det, truth in zip(ex["image"], ex["out_detections"], ex["out_target"], strict=True)]
        return detection_grid(tiles, names, note=f"left: ground truth; right: predictions, score >= {self.score_threshold:g}")

    # --- delivery -------------------------------------------------------------------------------
    def export_spec(self) -> ExportSpec:
        """Fixed-size single-image ONNX: ``image`` [1, 3, H, W] letterboxed RGB in [0, 1] -> boxes [N, 4]
        (letterboxed pixels), scores [N], labels [N] (padding rows: score 0, label -1). Export by tracing."""
        _, height, width = self.data_info.input_size
        metadata = self.data_info.export_metadata(
            resize="letterbox (keep aspect, centre, pad)", pad_value=self.data_info.pad_value,
            input_range="RGB float in [0, 1]; ImageNet normalisation is inside the model",
            box_format="xyxy letterboxed pixels; original = (box - [pad_x, pad_y, pad_x, pad_y]) / scale")
        outputs = [Output("boxes"), Output("scores", None, self.score_threshold),
                   Output("labels", None, None, self.data_info.class_names)]
        # Box corners are pixels (hundreds): float32 rounding in the box decoding differs by ~1e-5..1e-3 px.
        return ExportSpec(DetectorForExport(self.net).eval(), {"image": torch.zeros(1, 3, height, width)}, outputs,
                          answer=Detections, metadata=metadata, dynamic=False,
                          parity_tolerance={"boxes": 1e-2, "scores": 1e-4, "labels": 0.0})
