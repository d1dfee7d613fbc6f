"""The toy task: bright or dark, a linear model on mean colour; built only on the framework's contracts."""

from __future__ import annotations

import torch
import torch.nn as nn
from torchmetrics import MetricCollection
from torchmetrics.classification import BinaryAccuracy

from pipeline.delivery.answers import ExportSpec, Output
from pipeline.trainers.base import BaseTask


class BrightnessNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.linear(images.mean(dim=(2, 3))).softmax(dim=1)


class BrightnessTask(BaseTask):
    def build_net(self) -> nn.Module:
        return BrightnessNet()

    def build_metrics(self) -> MetricCollection:
        return MetricCollection({"acc": BinaryAccuracy()})

    def model_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        probs = self.net(batch["image"])
        loss = self.loss_fn(probs.clamp_min(1e-6).log(), batch["label"])
        return {"loss": loss, "preds": probs[:, 1], "target": batch["label"]}

    def export_spec(self) -> ExportSpec:
        classes = list(self.data_info.class_names)
        return ExportSpec(self.net, {"image": torch.zeros(2, *self.data_info.input_size)},
                          [Output("probabilities", "softmax", 0.5, classes)], metadata={"task": "brightness"})
