"""Backbones from timm by name, with offline local weights support."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import timm
import torch.nn as nn
from omegaconf import Container, OmegaConf

# Registers the framework's own small models (simple_cnn, face_cnn, glasses_cnn) in timm's registry.
from pipeline.modules import small_cnn, tiny_cnn  # noqa: F401
from pipeline.utils.errors import UserError


def create_backbone(
    name: str,
    pretrained: bool = False,
    weights: str | None = None,
    in_chans: int = 3,
    **kwargs,
) -> nn.Module:
    """Create a timm model without its classifier (``num_classes=0``): a pooled feature extractor.

    ``pretrained=True`` downloads timm's weights (needs internet); ``weights=<local file>`` loads a
    checkpoint offline through timm's own loader (``pretrained_cfg_overlay``). The number of output
    features is ``model.num_features``.
    """
    if not timm.is_model(name):
        close = timm.list_models(f"*{name}*")[:8]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise UserError(f"model.backbone: '{name}' is not a timm model name{hint}")
    # Config lists and dicts reach timm as plain Python (timm's models index and split them).
    plain = {k: OmegaConf.to_container(v) if isinstance(v, Container) else v for k, v in kwargs.items()}
    options = dict(num_classes=0, in_chans=in_chans, **plain)
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise UserError(f"model.weights: file '{path}' does not exist (give a local weights file or null)")
        return timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(path)}, **options)
    return timm.create_model(name, pretrained=pretrained, **options)


def backbone_from(model: Any) -> nn.Module:
    """The backbone that a model config (``model.backbone``, ``pretrained``, ``weights``, ``kwargs``) describes: what
    the classification, siamese and verification tasks each build their network around."""
    return create_backbone(model.backbone, model.get("pretrained", False), model.get("weights"), **model.get("kwargs", {}))
