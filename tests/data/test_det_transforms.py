"""Letterbox geometry and box-aware train/eval transforms."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest
import torch

from pipeline.data.detection_transforms import (
    PAD_VALUE,
    DetectionTransform,
    build_train_augment,
    letterbox,
    letterbox_boxes,
    unletterbox_boxes,
)

# The training augmentation of the measured Kaggle runs (configs/data/voc_facemask.yaml's list).
MEASURED_AUGMENT = [
    A.HorizontalFlip(p=0.5),
    A.Affine(scale=(0.75, 1.25), translate_percent=(-0.1, 0.1), fill=PAD_VALUE, p=0.7),
    A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03, p=0.8),
]


def _image_with_white_box(height: int, width: int, box) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = 255
    return image


@pytest.mark.parametrize(
    ("height", "width", "size"), [(120, 200, 96), (200, 120, 96), (50, 50, 128), (90, 160, (64, 96))]
)
def test_letterbox_keeps_aspect_pads_with_114_and_boxes_follow_the_pixels(height, width, size):
    box = (width // 4, height // 3, width // 2, height * 2 // 3)
    image = _image_with_white_box(height, width, box)
    out, scale, (pad_x, pad_y) = letterbox(image, size)
    out_h, out_w = (size, size) if isinstance(size, int) else size
    assert out.shape == (out_h, out_w, 3)
    assert scale == pytest.approx(min(out_h / height, out_w / width))
    if pad_x:
        assert (out[:, : pad_x - 1] == PAD_VALUE).all()
    if pad_y:
        assert (out[: pad_y - 1] == PAD_VALUE).all()
    mapped = letterbox_boxes(np.array([box]), scale, (pad_x, pad_y))[0]
    ys, xs = np.nonzero(out[..., 0] > 128)
    assert np.allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], mapped, atol=1.5)


def test_unletterbox_inverts_letterbox_and_clips():
    boxes = np.array([[10.0, 20.0, 150.0, 90.0], [0.0, 0.0, 200.0, 100.0]])
    _, scale, pad = letterbox(np.zeros((100, 200, 3), np.uint8), 64)
    back = unletterbox_boxes(letterbox_boxes(boxes, scale, pad), scale, pad)
    assert np.allclose(back, boxes, atol=1e-4)
    outside = letterbox_boxes(np.array([[-5.0, -5.0, 210.0, 50.0]]), scale, pad)
    assert unletterbox_boxes(outside, scale, pad, image_size=(100, 200)).tolist() == [[0.0, 0.0, 200.0, 50.0]]


def test_eval_transform_gives_model_ready_sample():
    image = _image_with_white_box(100, 200, (50, 25, 100, 75))
    sample = DetectionTransform(64)(image, np.array([[50.0, 25.0, 100.0, 75.0]]), np.array([2]))
    assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == torch.float32
    assert 0.0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1.0
    assert sample["labels"].tolist() == [2] and sample["labels"].dtype == torch.int64
    assert torch.allclose(sample["boxes"], torch.tensor([[16.0, 24.0, 32.0, 40.0]]))
    assert sample["scale"] == 0.32 and sample["pad"] == (0, 16)


def test_train_augment_moves_boxes_with_the_pixels_and_drops_hidden_ones():
    transform = DetectionTransform(128, build_train_augment(MEASURED_AUGMENT[:2], seed=0))  # flip, scale/shift
    image = _image_with_white_box(128, 128, (40, 40, 80, 90))
    kept_sizes = set()
    for _ in range(20):
        sample = transform(image, np.array([[40.0, 40.0, 80.0, 90.0], [0, 0, 3, 3]]), np.array([1, 0]))
        white = sample["image"][0] > 0.9
        ys, xs = torch.nonzero(white, as_tuple=True)
        (box,) = [b for b, label in zip(sample["boxes"], sample["labels"], strict=True) if label == 1]
        assert torch.allclose(
            box, torch.stack([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]).float(), atol=2.5
        )
        kept_sizes.add(round(float(box[2] - box[0])))
        assert len(sample["boxes"]) == len(sample["labels"])
    assert len(kept_sizes) > 3  # scale augmentation actually varies the boxes


def test_train_transform_handles_images_without_boxes():
    sample = DetectionTransform(64, build_train_augment(MEASURED_AUGMENT))(
        np.zeros((30, 40, 3), np.uint8), np.zeros((0, 4)), np.zeros(0)
    )
    assert sample["boxes"].shape == (0, 4) and sample["labels"].shape == (0,)


def test_the_configs_augmentation_is_a_transform_list_like_every_tasks(tmp_path):
    """data.augment has one shape in every task: a list of albumentations transforms; detection's YAML
    list builds the transforms the measured runs used."""
    from conftest import compose_config
    from hydra.utils import instantiate

    cfg = compose_config(["experiment=facemask_detection"], tmp_path / "run")
    built = [instantiate(step) for step in cfg.data.augment]
    assert [repr(t) for t in built] == [repr(t) for t in MEASURED_AUGMENT]
    assert cfg.data.min_visibility == 0.3 and (cfg.data.image_size, cfg.data.crop) == (512, 384)
    composed = build_train_augment(cfg.data.augment, cfg.data.min_visibility, 48)
    assert [type(t).__name__ for t in composed.transforms][-1] == "RandomCrop"
