"""Tiny CNN for 82x82 eye zones (glasses on eyes), registered in timm as ``glasses_cnn``.

Seven 3x3 conv-BN-ReLU layers (16-32-32-64-64-64-128, a max-pool after the first and stride 2 in
three of them: 82 -> 41 -> 21 -> 11 -> 6), global average pooling, then a head of dense 32 ->
ReLU -> dropout -> logits. About 185k parameters, under 1 MB as fp32 ONNX.
Import this module before ``timm.create_model("glasses_cnn", ...)`` so the name is registered.
"""

from __future__ import annotations

import torch
from timm.layers import ConvNormAct, SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import nn

# (out_channels, stride) of the seven 3x3 convolutions; a 2x2 max-pool follows the first.
CONV_LAYERS = ((16, 1), (32, 1), (32, 2), (64, 1), (64, 2), (64, 1), (128, 2))
HIDDEN_SIZE = 32


def _classifier(in_features: int, num_classes: int, drop_rate: float) -> nn.Module:
    """Dense hidden layer, dropout and logits; Identity when ``num_classes`` is 0 (pooled features)."""
    if num_classes <= 0:
        return nn.Identity()
    return nn.Sequential(
        nn.Linear(in_features, HIDDEN_SIZE),
        nn.ReLU(inplace=True),
        nn.Dropout(drop_rate),
        nn.Linear(HIDDEN_SIZE, num_classes),
    )


class GlassesCNN(nn.Module):
    """timm-style tiny classifier: ``forward_features`` -> NxCxhxw, ``forward_head`` -> logits."""

    def __init__(
        self,
        num_classes: int = 2,
        in_chans: int = 3,
        drop_rate: float = 0.2,
        global_pool: str = "avg",
    ):
        super().__init__()
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        layers: list[nn.Module] = []
        channels = in_chans
        for index, (out_channels, stride) in enumerate(CONV_LAYERS):
            layers.append(ConvNormAct(channels, out_channels, 3, stride=stride, act_layer=nn.ReLU))
            if index == 0:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.num_features = self.head_hidden_size = channels
        self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.head = _classifier(self.num_features, num_classes, drop_rate)

    def get_classifier(self) -> nn.Module:
        """The head after pooling (dense 32, dropout, logits)."""
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """New head for ``num_classes`` (0: none, the model returns pooled features)."""
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=global_pool, flatten=True)
        self.head = _classifier(self.num_features, num_classes, self.drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Unpooled feature map N x 128 x h x w."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool the feature map; logits unless ``pre_logits`` (then pooled features)."""
        x = self.global_pool(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits N x num_classes, or pooled features N x 128 when num_classes is 0."""
        return self.forward_head(self.forward_features(x))


default_cfgs = generate_default_cfgs(
    {
        "glasses_cnn": {
            "url": "",
            "num_classes": 2,
            "input_size": (3, 82, 82),
            "pool_size": (6, 6),
            "crop_pct": 1.0,
            "interpolation": "bilinear",
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
            "first_conv": "features.0.conv",
            "classifier": "head.3",
        }
    }
)


@register_model
def glasses_cnn(pretrained: bool = False, **kwargs) -> GlassesCNN:
    """Tiny eye-zone glasses classifier (no pretrained weights exist)."""
    return build_model_with_cfg(GlassesCNN, "glasses_cnn", pretrained, **kwargs)
