"""Albumentations pipelines built from config: training augmentations + the one shared preprocessing.

Every task ends its pipeline with the same ``preprocess`` steps (resize, normalise, to tensor), and
test, predict, export and serve call :func:`build_transform` with ``augment=None``, so the tensor a
served image becomes is the one evaluation used.
"""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2
from hydra.utils import instantiate

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def preprocess_steps(size: Sequence[int] | None, mean: Sequence[float], std: Sequence[float]) -> list:
    """Resize to ``size`` = (height, width) when given, scale to [0, 1], normalise, HWC -> CHW tensor."""
    steps = [A.Resize(int(size[0]), int(size[1]))] if size else []
    return steps + [A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0), ToTensorV2()]


def instantiate_steps(augment: Sequence | None) -> list:
    """``augment``'s transforms: albumentations objects as they are, ``_target_`` configs instantiated."""
    return [instantiate(step) if not isinstance(step, A.BasicTransform | A.BaseCompose) else step for step in augment or []]


def build_transform(
    augment: Sequence | None,
    size: Sequence[int] | None,
    mean: Sequence[float],
    std: Sequence[float],
    **compose_kwargs,
) -> A.Compose:
    """``augment`` (a list of albumentations transforms or ``_target_`` configs) + the shared preprocessing."""
    return A.Compose(instantiate_steps(augment) + preprocess_steps(size, mean, std), **compose_kwargs)


def apply_transform(transform: A.Compose, image: np.ndarray) -> torch.Tensor:
    """Run an image-only pipeline on an RGB uint8 array and return the CHW float tensor."""
    return transform(image=image)["image"]
