"""The framework's own small CNNs for low-resolution inputs, registered in timm as ``simple_cnn`` and ``face_cnn``
(through timm's ``build_model_with_cfg``, like ``glasses_cnn`` in ``tiny_cnn.py``)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from timm.layers import ClassifierHead
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model


def _norm(kind: str, channels: int) -> nn.Module:
    """``batch`` (BatchNorm) or ``group`` (GroupNorm: per-sample statistics, so a sample's output does
    not depend on the rest of the batch, e.g. under DDP without SyncBatchNorm or with tiny batches)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    raise ValueError(f"model.kwargs.norm: '{kind}' is not one of batch, group")


def _conv(in_ch: int, out_ch: int, stride: int = 1, norm: str = "batch") -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False), _norm(norm, out_ch), nn.ReLU(inplace=True)]


class PooledCNN(nn.Module):
    """timm's model interface (``num_features``, ``forward_features``, ``forward_head``, ``reset_classifier``)
    over ``self.features`` and timm's ``ClassifierHead`` (global average pooling, dropout, linear)."""

    def __init__(self, features: nn.Module, num_features: int, num_classes: int, drop_rate: float) -> None:
        super().__init__()
        self.features = features
        self.num_features = num_features
        self.num_classes = num_classes
        self.head = ClassifierHead(num_features, num_classes, "avg", drop_rate)

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class SimpleCNN(PooledCNN):
    """Stages of two 3x3 conv-norm-ReLU layers and a 2x2 max-pool, then global average pooling; ``norm``
    is ``batch`` (default) or ``group``."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, widths: Sequence[int] = (16, 32, 64),
                 drop_rate: float = 0.0, norm: str = "batch", **_: object) -> None:
        chans = [in_chans, *widths]
        stages = [nn.Sequential(*_conv(a, b, norm=norm), *_conv(b, b, norm=norm), nn.MaxPool2d(2)) for a, b in zip(chans, chans[1:])]
        super().__init__(nn.Sequential(*stages), chans[-1], num_classes, drop_rate)


class FaceCNN(PooledCNN):
    """A stride-2 3x3 stem, then one 3x3 conv-BN-ReLU per width with 2x2 max-pools between them, then
    global average pooling: a 16x downsampling whose last layer sees most of a 96x72 face (forehead
    lines, mask edge and hair at once) for about 60 MMACs."""

    def __init__(self, num_classes: int = 1000, in_chans: int = 3, widths: Sequence[int] = (32, 48, 96, 128, 128),
                 drop_rate: float = 0.0, **_: object) -> None:
        layers: list[nn.Module] = [nn.Sequential(*_conv(in_chans, widths[0], stride=2))]
        for i, (in_ch, out_ch) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Sequential(*_conv(in_ch, out_ch)))
            if i < len(widths) - 2:
                layers.append(nn.MaxPool2d(2))
        super().__init__(nn.Sequential(*layers), widths[-1], num_classes, drop_rate)


_HALF = {"url": "", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "first_conv": "features.0.0", "classifier": "head.fc"}
default_cfgs = generate_default_cfgs({"simple_cnn": {**_HALF, "input_size": (3, 32, 32)},
                                      "face_cnn": {**_HALF, "input_size": (3, 96, 72)}})


@register_model
def simple_cnn(pretrained: bool = False, **kwargs) -> SimpleCNN:
    """Three-stage 16-32-64 CNN (about 70k parameters); has no pretrained weights."""
    return build_model_with_cfg(SimpleCNN, "simple_cnn", pretrained, **kwargs)


@register_model
def face_cnn(pretrained: bool = False, **kwargs) -> FaceCNN:
    """Five-layer 32-48-96-128-128 strided CNN (about 0.3 M parameters); has no pretrained weights."""
    return build_model_with_cfg(FaceCNN, "face_cnn", pretrained, **kwargs)
