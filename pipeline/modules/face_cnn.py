"""A small strided CNN for ~100 px face images, registered in timm as ``face_cnn``."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from pipeline.modules.small_cnn import PooledCNN


def _conv(in_ch: int, out_ch: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True))


class FaceCNN(PooledCNN):
    """A stride-2 3x3 stem, then one 3x3 conv-BN-ReLU per width with 2x2 max-pools between them, then
    global average pooling: a 16x downsampling whose last layer sees most of a 96x72 face (forehead
    lines, mask edge and hair at once) for about 60 MMACs. timm's model interface, like ``simple_cnn``."""

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        widths: Sequence[int] = (32, 48, 96, 128, 128),
        drop_rate: float = 0.0,
        **_: object,
    ) -> None:
        layers: list[nn.Module] = [_conv(in_chans, widths[0], stride=2)]
        for i, (in_ch, out_ch) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(_conv(in_ch, out_ch))
            if i < len(widths) - 2:
                layers.append(nn.MaxPool2d(2))
        super().__init__(nn.Sequential(*layers), widths[-1], num_classes, drop_rate)


default_cfgs = generate_default_cfgs({"face_cnn": {"url": "", "input_size": (3, 96, 72), "mean": (0.5, 0.5, 0.5),
                                                  "std": (0.5, 0.5, 0.5), "first_conv": "features.0.0", "classifier": "fc"}})


@register_model
def face_cnn(pretrained: bool = False, **kwargs) -> FaceCNN:
    """Five-layer 32-48-96-128-128 strided CNN (about 0.3 M parameters); has no pretrained weights."""
    return build_model_with_cfg(FaceCNN, "face_cnn", pretrained, **kwargs)
