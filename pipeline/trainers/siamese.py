"""Siamese two-image task: one logit per pair, "same shape" vs "different"."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    BinaryAccuracy,
    BinaryAUROC,
    BinaryF1Score,
    BinaryPrecision,
    BinaryRecall,
)

from pipeline.callbacks.image_grid import annotated_grid, denormalize
from pipeline.delivery.answers import ExportSpec, Output, PairScores
from pipeline.modules.backbones import backbone_from
from pipeline.modules.siamese import SiameseNet
from pipeline.trainers.base import BaseTask


class SiameseTask(BaseTask):
    """Shared encoder on both images, ``|f1 - f2|`` -> MLP -> logit; metrics over the whole epoch."""

    def __init__(self, *args, threshold: float = 0.5, **kwargs) -> None:
        self.threshold = threshold
        super().__init__(*args, **kwargs)

    def build_net(self) -> nn.Module:
        cfg = self.model_cfg
        encoder = backbone_from(cfg)
        head = cfg.get("head", {})
        return SiameseNet(encoder, list(head.get("hidden_dims", [128])), head.get("dropout", 0.0))

    def build_metrics(self) -> MetricCollection:
        t = self.threshold
        return MetricCollection({
            "acc": BinaryAccuracy(threshold=t),
            "precision": BinaryPrecision(threshold=t),
            "recall": BinaryRecall(threshold=t),
            "f1": BinaryF1Score(threshold=t),
            "auroc": BinaryAUROC(),
        })

    def forward(self, image1: torch.Tensor, image2: torch.Tensor) -> torch.Tensor:
        return self.net(image1, image2)

    def model_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self(batch["image1"], batch["image2"])
        target = batch["label"]
        return {"loss": self.loss_fn(logits, target), "preds": torch.sigmoid(logits), "target": target.long()}

    def example_classes(self, batch: dict[str, Any], out: dict[str, Any]) -> list[list[int]]:
        """Same (1) or different (0) of each pair, so the drawn examples show both kinds."""
        return [[int(t)] for t in out["target"].tolist()]

    def render_examples(self, stage: str) -> torch.Tensor | None:
        ex = self.examples.get(stage)
        if not ex:
            return None
        mean, std = self.data_info.mean, self.data_info.std
        pairs = torch.cat([denormalize(ex["image1"], mean, std), denormalize(ex["image2"], mean, std)], dim=3)
        probs, truth = ex["out_preds"], ex["out_target"]
        labels = [
            (f"true {'same' if t else 'different'}\npred p(same)={p:.2f}", int(p >= self.threshold) == int(t)) for p, t in zip(probs.tolist(), truth.tolist())
        ]
        return annotated_grid(pairs, labels)

    def export_spec(self) -> ExportSpec:
        """Two images -> the logit that they show the same thing (``sigmoid(logit) >= threshold``)."""
        info = self.data_info
        example = torch.zeros(2, *info.input_size)
        return ExportSpec(self.net, {"image1": example, "image2": example.clone()},
                          [Output("logit", None, self.threshold, list(info.class_names))], answer=PairScores,
                          metadata=self.data_info.export_metadata(decision="sigmoid(logit) >= threshold"))
