"""Box-aware preprocessing for detection: one letterbox shared by training, evaluation, export and predict.

Every image is first letterboxed to the model size (aspect kept, centred, padded with 114 as the
seed did); training then adds ``data.augment``'s albumentations transforms (flips, scale/shift and
colour changes by default), which move the boxes with the image and drop boxes left less than
``min_visibility`` visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np
import torch

from pipeline.data.transforms import instantiate_steps

PAD_VALUE = 114


def _size_hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def letterbox(image: np.ndarray, size: int | tuple[int, int]) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize keeping the aspect ratio and pad to ``size`` ((h, w) or square); returns image, scale, (pad_x, pad_y).

    A point ``p`` of the input lands at ``p * scale + pad`` in the output.
    """
    out_h, out_w = _size_hw(size)
    height, width = image.shape[:2]
    scale = min(out_h / height, out_w / width)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interpolation)
    pad_x, pad_y = (out_w - new_w) // 2, (out_h - new_h) // 2
    canvas = np.full((out_h, out_w, *image.shape[2:]), PAD_VALUE, dtype=image.dtype)
    canvas[pad_y : pad_y + new_h, pad_x : pad_x + new_w] = resized
    return canvas, scale, (pad_x, pad_y)


def letterbox_boxes(boxes: np.ndarray, scale: float, pad: tuple[int, int]) -> np.ndarray:
    """Map xyxy boxes from the original image into the letterboxed one."""
    offset = np.array([pad[0], pad[1], pad[0], pad[1]], dtype=np.float32)
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * scale + offset


def unletterbox_boxes(
    boxes: np.ndarray, scale: float, pad: tuple[int, int], image_size: tuple[int, int] | None = None
) -> np.ndarray:
    """Map xyxy boxes from the letterboxed image back to the original; clip to ``image_size`` (h, w) if given."""
    offset = np.array([pad[0], pad[1], pad[0], pad[1]], dtype=np.float32)
    original = (np.asarray(boxes, dtype=np.float32).reshape(-1, 4) - offset) / scale
    if image_size is not None:
        height, width = image_size
        original = np.clip(original, 0, [width, height, width, height]).astype(np.float32)
    return original


def image_to_tensor(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 HxWx3 to float CxHxW in [0, 1] (the detectors normalise internally)."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)


def build_train_augment(
    augment: Sequence | None,
    min_visibility: float = 0.3,
    crop: int | None = None,
    seed: int | None = None,
) -> A.Compose:
    """``augment`` (albumentations transforms or ``_target_`` configs, ``data.augment``) moving pascal_voc
    boxes along (labels in ``labels``); boxes left less than ``min_visibility`` visible are dropped.

    ``crop`` trains on random ``crop`` x ``crop`` windows of the letterboxed image: objects keep their
    pixel size (the detector is convolutional and evaluates whole images), and a step costs
    (crop / image_size)^2 of a whole image, so the same time buys that many more epochs.
    """
    steps = instantiate_steps(augment)
    if crop:
        steps.append(A.RandomCrop(int(crop), int(crop), pad_if_needed=True, fill=PAD_VALUE))
    return A.Compose(
        steps,
        bbox_params=A.BboxParams(
            format="pascal_voc",
            label_fields=["labels"],
            min_visibility=min_visibility,
            clip=True,
            filter_invalid_bboxes=True,
        ),
        seed=seed,
    )


@dataclass
class DetectionTransform:
    """Letterbox (all stages) then, when ``augment`` is set, train augmentation; returns a model-ready sample.

    Output: ``image`` float CxHxW in [0, 1], ``boxes`` float [N, 4] xyxy in letterboxed pixels,
    ``labels`` long [N], and ``scale``/``pad`` to map predictions back with ``unletterbox_boxes``.
    """

    image_size: int | tuple[int, int]
    augment: A.Compose | None = None

    def __call__(self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> dict:
        boxed, scale, pad = letterbox(image, self.image_size)
        boxes = letterbox_boxes(boxes, scale, pad)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if self.augment is not None:
            out = self.augment(image=boxed, bboxes=boxes, labels=labels)
            boxed, boxes, labels = out["image"], out["bboxes"], out["labels"]
        return {
            "image": image_to_tensor(boxed),
            "boxes": torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1)),
            "scale": scale,
            "pad": pad,
        }
