"""A small plain CNN for low-resolution inputs, registered in timm as ``simple_cnn``."""

from __future__ import annotations

import torch
import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model


def _norm(kind: str, channels: int) -> nn.Module:
    """``batch`` (BatchNorm) or ``group`` (GroupNorm: per-sample statistics, so a sample's output does
    not depend on the rest of the batch, e.g. under DDP without SyncBatchNorm or with tiny batches)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    raise ValueError(f"model.kwargs.norm: '{kind}' is not one of batch, group")


def _conv_block(in_ch: int, out_ch: int, norm: str = "batch") -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False),
        _norm(norm, out_ch),
        nn.ReLU(inplace=True),
        nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False),
        _norm(norm, out_ch),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class PooledCNN(nn.Module):
    """timm's model interface (``num_features``, ``forward_features``, ``forward_head``,
    ``reset_classifier``) over ``self.features`` + global average pooling + dropout + a linear
    classifier, so the framework's own small CNNs stand wherever a timm backbone does."""

    def __init__(self, features: nn.Module, num_features: int, num_classes: int, drop_rate: float) -> None:
        super().__init__()
        self.features = features
        self.num_features = num_features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.reset_classifier(num_classes)

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.fc = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.pool(x).flatten(1))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class SimpleCNN(PooledCNN):
    """Stages of two 3x3 conv-norm-ReLU layers and a 2x2 max-pool, then global average pooling; ``norm``
    is ``batch`` (default) or ``group``."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        widths: tuple[int, ...] = (16, 32, 64),
        drop_rate: float = 0.0,
        norm: str = "batch",
        **_: object,
    ) -> None:
        stages, ch = [], in_chans
        for width in widths:
            stages.append(_conv_block(ch, width, norm))
            ch = width
        super().__init__(nn.Sequential(*stages), ch, num_classes, drop_rate)


default_cfgs = generate_default_cfgs({"simple_cnn": {"url": "", "input_size": (3, 32, 32), "mean": (0.5, 0.5, 0.5),
                                                    "std": (0.5, 0.5, 0.5), "first_conv": "features.0.0", "classifier": "fc"}})


@register_model
def simple_cnn(pretrained: bool = False, **kwargs) -> SimpleCNN:
    """Three-stage 16-32-64 CNN (about 70k parameters); has no pretrained weights."""
    return build_model_with_cfg(SimpleCNN, "simple_cnn", pretrained, **kwargs)
