"""Image classification: one head, or several named heads (e.g. mask / gender / age) on one backbone.

Single-head mode (``model.heads`` unset) predicts ``data_info.class_names`` from ``batch["label"]``.
Multi-head mode (``model.heads: {mask: 3, gender: 2, age: 3}``) trains one head per name on
``batch[<name>]`` with a weighted sum of per-head losses (``model.head_weights``); when the data
names a ``combine`` rule (``data_info.combine``, see ``pipeline/data/combine.py``), the heads'
probabilities are recombined into the dataset's classes and scored against ``batch["label"]`` too.

Every prediction path (validation, test, export: predict and the service use the export's graph) averages probabilities over the views of
``tta`` (``flip`` or ``flip_crops``) when it is set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from hydra.utils import instantiate
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix, MulticlassF1Score

from pipeline.callbacks.image_grid import annotated_grid, denormalize
from pipeline.data.combine import COMBINERS
from pipeline.delivery.answers import ExportSpec, Output, decide_and_report, output_name
from pipeline.modules.backbones import backbone_from
from pipeline.modules.heads import MLPHead
from pipeline.trainers.base import BaseTask
from pipeline.utils.contracts import DataInfo
from pipeline.utils.errors import UserError

MAIN = "label"
TTA_MODES = ("flip", "flip_crops")
CROP_SCALE = 0.9


def tta_views(images: torch.Tensor, mode: str | None) -> list[torch.Tensor]:
    """The batch as seen by test-time augmentation: itself, its mirror, and (``flip_crops``) five crops."""
    if mode is None:
        return [images]
    if mode not in TTA_MODES:
        raise UserError(f"task.tta: '{mode}' is not one of {', '.join(TTA_MODES)} or null")
    views = [images, images.flip(-1)]
    if mode == "flip_crops":
        # Plain ints: an ONNX export has a fixed image size, so the crops are constants of the graph.
        height, width = (int(size) for size in images.shape[-2:])
        ch, cw = round(height * CROP_SCALE), round(width * CROP_SCALE)
        offsets = [(0, 0), (0, width - cw), (height - ch, 0), (height - ch, width - cw),
                   ((height - ch) // 2, (width - cw) // 2)]
        for top, left in offsets:
            crop = images[..., top : top + ch, left : left + cw]
            views.append(F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False))
    return views


class MultiHeadClassifier(nn.Module):
    """Backbone features -> one MLP head per output name; returns ``{name: logits}``."""

    def __init__(self, backbone: nn.Module, heads: dict[str, int], hidden_dims: Sequence[int] = (), dropout: float = 0.0):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict(
            {name: MLPHead(backbone.num_features, n, list(hidden_dims), dropout) for name, n in heads.items()}
        )

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(images)
        return {name: head(features) for name, head in self.heads.items()}


class ProbabilityModel(nn.Module):
    """Exportable wrapper: images -> softmax probabilities per output (combined ones included), averaged
    over the ``tta`` views exactly as test and predict do, as a tuple in ``outputs`` order."""

    def __init__(self, net: nn.Module, combine: str | None, outputs: Sequence[str], tta: str | None = None):
        super().__init__()
        self.net = net
        self.combine = combine
        self.outputs = list(outputs)
        self.tta = tta

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        views = tta_views(images, self.tta)
        probs: dict[str, torch.Tensor] = {}
        for view in views:
            for name, logits in self.net(view).items():
                probs[name] = probs.get(name, 0) + logits.softmax(dim=1) / len(views)
        if self.combine:
            probs[MAIN] = COMBINERS[self.combine][1](probs)
        return tuple(probs[name] for name in self.outputs)


@dataclass(frozen=True)
class Heads:
    """A classifier's outputs: ``sizes`` (head -> number of classes; ``{"label": n}`` with one head), ``classes``
    (every scored output, the combined ``label`` included -> class names), ``combine`` (the rule recombining the
    heads into the dataset's classes, when the heads allow it) and the loss ``weights`` per head."""

    sizes: dict[str, int]
    classes: dict[str, list[str]]
    combine: str | None
    weights: dict[str, float]

    @property
    def main(self) -> str:
        return MAIN if MAIN in self.classes else next(iter(self.sizes))

    @staticmethod
    def output_of(metric_name: str) -> str:
        """The output a metric scores: ``mask_f1`` -> ``mask``, ``f1`` -> ``label``."""
        return metric_name.rpartition("_")[0] or MAIN

    @classmethod
    def of(cls, model: Any, info: DataInfo) -> Heads:
        """From ``model.heads`` / ``model.head_weights`` and the data's classes, heads and ``combine`` rule."""
        heads = model.get("heads")
        sizes = {str(name): int(n) for name, n in heads.items()} if heads else {MAIN: len(info.class_names)}
        rule = info.combine if MAIN not in sizes else None
        if rule is not None and rule not in COMBINERS:
            raise UserError(f"data: unknown combine rule '{rule}' (known: {sorted(COMBINERS)})")
        combine = rule if rule is not None and set(COMBINERS[rule][0]) <= set(sizes) else None
        classes = {name: list(info.class_names) if name == MAIN else list(info.heads.get(name, [str(i) for i in range(n)]))
                   for name, n in sizes.items()}
        if combine:
            classes[MAIN] = list(info.combine_class_names or info.class_names)
        weights = dict(model.get("head_weights") or {})
        if set(weights) - set(sizes):
            raise UserError(f"model.head_weights: {sorted(set(weights) - set(sizes))} name no head of model.heads {list(sizes)}")
        return cls(sizes, classes, combine, {name: float(weights.get(name, 1.0)) for name in sizes})


class ClassificationTask(BaseTask):
    """timm backbone + one or several softmax heads; accuracy and macro F1 per output, per epoch.

    ``lists_positive``: prediction prints the paths of the images decided as class 1 (two classes)."""

    PREDICT_OPTIONS = ("tta", "quiet")
    lists_positive = False

    def __init__(self, *args, tta: str | None = None, threshold: float = 0.5, **kwargs) -> None:
        tta_views(torch.zeros(1, 3, 4, 4), tta)  # reject an unknown mode before building anything
        self.tta = tta
        self.threshold = threshold
        super().__init__(*args, **kwargs)
        self.hparams.update({"tta": tta, "threshold": threshold})
        self.confusion = nn.ModuleDict({name: MulticlassConfusionMatrix(len(names)) for name, names in self.heads.classes.items()})

    @cached_property
    def heads(self) -> Heads:
        """What the network outputs, from the model group and the data (first asked by ``build_net``)."""
        return Heads.of(self.model_cfg, self.data_info)

    # --- building -------------------------------------------------------------------------------
    def build_net(self) -> nn.Module:
        cfg = self.model_cfg
        backbone = backbone_from(cfg)
        head = cfg.get("head", {})
        return MultiHeadClassifier(backbone, self.heads.sizes, head.get("hidden_dims", []), head.get("dropout", 0.0))

    def build_loss(self) -> nn.Module:
        """One loss per head; ``weight: balanced`` uses that head's training-split class counts."""
        counts = {MAIN: self.data_info.class_counts, **self.data_info.head_class_counts}
        losses = nn.ModuleDict()
        for name in self.heads.sizes:
            loss = instantiate(self.hyp.loss)
            if counts.get(name) is not None and hasattr(loss, "set_class_counts"):
                loss.set_class_counts(counts[name])
            losses[name] = loss
        return losses

    def build_metrics(self) -> MetricCollection:
        metrics = {}
        for name, classes in self.heads.classes.items():
            prefix = "" if name == MAIN else f"{name}_"
            metrics[f"{prefix}acc"] = MulticlassAccuracy(len(classes), average="micro")
            metrics[f"{prefix}f1"] = MulticlassF1Score(len(classes), average="macro")
        return MetricCollection(metrics, compute_groups=False)

    # --- forward and steps ----------------------------------------------------------------------
    def probabilities(self, images: torch.Tensor, tta: str | None = None) -> dict[str, torch.Tensor]:
        """Softmax probabilities per output, averaged over the ``tta`` views, with the combined output."""
        outputs = list(self.heads.classes)
        return dict(zip(outputs, ProbabilityModel(self.net, self.heads.combine, outputs, tta)(images), strict=True))

    def decide(self, probs: torch.Tensor) -> torch.Tensor:
        return decide_and_report(probs, self.threshold)[0]

    def model_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.net(batch["image"])
        loss = sum(self.heads.weights[name] * self.loss_fn[name](out, batch[name]) for name, out in logits.items())
        if self.training or self.tta is None:
            probs = {name: out.softmax(dim=1) for name, out in logits.items()}
            if self.heads.combine:
                probs[MAIN] = COMBINERS[self.heads.combine][1](probs)
        else:
            probs = self.probabilities(batch["image"], self.tta)
        pairs = {name: (self.decide(p), batch[name].long()) for name, p in probs.items()}
        main = self.heads.main
        return {"loss": loss, "preds": probs[main], "target": pairs[main][1], "pairs": pairs}

    def update_metrics(self, stage: str, out: dict[str, Any]) -> MetricCollection:
        """Each metric follows its own output (18-way class or a head); val/test also fill the confusion matrices."""
        metrics = self.metrics[stage]
        for name, metric in metrics.items(keep_base=True, copy_state=False):
            metric.update(*out["pairs"][Heads.output_of(name)])
        if stage != "train":
            for name, (preds, target) in out["pairs"].items():
                self.confusion[name].update(preds, target)
        return metrics

    # --- confusion matrices (drawn by callbacks.confusion_matrix, tabled by callbacks.per_class_report) ----------
    def on_validation_epoch_start(self) -> None:
        """Each val and test epoch starts with empty confusion matrices."""
        for metric in self.confusion.values():
            metric.reset()

    on_test_epoch_start = on_validation_epoch_start

    def confusion_matrices(self) -> dict[str, tuple[torch.Tensor, list[str]]]:
        """Output -> (confusion matrix [true, predicted] of the current val/test epoch, class names)."""
        return {name: (metric.compute().cpu(), self.heads.classes[name]) for name, metric in self.confusion.items()
                if metric.update_called}

    def example_classes(self, batch: dict[str, Any], out: dict[str, Any]) -> list[list[int]]:
        """Each item's true class of the main output, so the drawn examples cover every class."""
        return [[int(t)] for t in out["target"].tolist()]

    def render_examples(self, stage: str) -> torch.Tensor | None:
        ex = self.examples.get(stage)
        if not ex:
            return None
        images = denormalize(ex["image"], self.data_info.mean, self.data_info.std)
        names = self.heads.classes[self.heads.main]
        labels = []
        for probs, truth in zip(ex["out_preds"], ex["out_target"].tolist()):
            pred = int(self.decide(probs[None])[0])
            labels.append((f"true {names[truth]}\npred {names[pred]} {float(probs[pred]):.2f}", pred == truth))
        return annotated_grid(images, labels)

    # --- delivery -------------------------------------------------------------------------------
    def export_spec(self) -> ExportSpec:
        """A single-image classifier: ``image`` [B, C, H, W] -> probabilities per output, main output first,
        test-time augmentation (``tta``) inside the graph."""
        classes = self.heads.classes
        names = sorted(classes, key=lambda name: name != self.heads.main)
        outputs = [Output(output_name(name), "softmax", self.threshold if len(classes[name]) == 2 else None, classes[name])
                   for name in names]
        metadata = self.data_info.export_metadata(class_names=classes[self.heads.main], tta=self.tta, target=self.data_info.target)
        return ExportSpec(ProbabilityModel(self.net, self.heads.combine, names, self.tta),
                          {"image": torch.zeros(2, *self.data_info.input_size)}, outputs, metadata=metadata)

