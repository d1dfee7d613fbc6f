"""VOC detection datamodule: synthetic cache, seeded split written and reused, items, collate, preprocessing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipeline.data.detection import VocDetectionDataModule
from pipeline.data.detection_transforms import PAD_VALUE, unletterbox_boxes
from pipeline.data.synthetic.voc_facemask import generate_voc_facemask
from pipeline.utils.errors import UserError

SMALL = {"num_images": 30, "image_size": 96, "seed": 3}


def make_datamodule(tmp_path, **kwargs) -> VocDetectionDataModule:
    options = dict(cache_dir=str(tmp_path / "cache"), image_size=64, synthetic=SMALL, batch_size=4, num_workers=0,
                   split_out=str(tmp_path / "run" / "results" / "split.json"), seed=1)
    datamodule = VocDetectionDataModule(**{**options, **kwargs})
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def test_synthetic_cache_is_generated_once(tmp_path):
    datamodule = make_datamodule(tmp_path)
    root = datamodule.data_root
    assert (root / ".complete").is_file() and len(list((root / "images").iterdir())) == SMALL["num_images"]
    stamp = (root / "images" / "maksssksksss0.png").stat().st_mtime_ns
    make_datamodule(tmp_path).prepare_data()
    assert (root / "images" / "maksssksksss0.png").stat().st_mtime_ns == stamp


def test_split_written_disjoint_and_reused(tmp_path):
    make_datamodule(tmp_path)
    saved = json.loads((tmp_path / "run" / "results" / "split.json").read_text())
    names = [set(saved[s]) for s in ("train", "val", "test")]
    assert sum(map(len, names)) == SMALL["num_images"] and not (names[0] & names[1] or names[0] & names[2])
    other = make_datamodule(tmp_path / "other", cache_dir=str(tmp_path / "cache"), seed=99,
                            split_file=str(tmp_path / "run" / "results" / "split.json"))
    assert {s: sorted(f"images/{i.image_path.name}" for i in other.splits[s]) for s in saved} == saved
    assert json.loads((tmp_path / "other" / "run" / "results" / "split.json").read_text()) == saved


def test_info_counts_training_objects(tmp_path):
    datamodule = make_datamodule(tmp_path)
    info = datamodule.info
    expected = np.zeros(3, dtype=int)
    for image in datamodule.splits["train"]:
        for obj in image.objects:
            expected[obj.label] += 1
    assert info.class_counts == expected.tolist() and info.input_size == (3, 64, 64)
    assert info.class_names[2] == "mask_weared_incorrect" and info.pad_value == PAD_VALUE


def test_batches_keep_boxes_per_image(tmp_path):
    datamodule = make_datamodule(tmp_path, augment=[{"_target_": "albumentations.HorizontalFlip", "p": 1.0}])
    batch = next(iter(datamodule.val_dataloader()))
    assert batch["image"].shape == (4, 3, 64, 64)
    assert len(batch["boxes"]) == len(batch["labels"]) == 4
    for boxes, labels in zip(batch["boxes"], batch["labels"], strict=True):
        assert boxes.shape == (len(labels), 4) and boxes.dtype == torch.float32
        assert (boxes[:, 2:] > boxes[:, :2]).all() and (boxes >= 0).all() and (boxes <= 64).all()
    train = next(iter(datamodule.train_dataloader()))
    assert train["image"].shape[1:] == (3, 64, 64)


def test_crop_trains_on_windows_and_evaluates_whole_images(tmp_path):
    """data.crop: training batches are crop x crop windows of the letterbox, boxes inside them; val is whole."""
    datamodule = make_datamodule(tmp_path, crop=32)
    train = next(iter(datamodule.train_dataloader()))
    assert train["image"].shape[1:] == (3, 32, 32)
    assert all(((boxes >= 0) & (boxes <= 32)).all() for boxes in train["boxes"])
    assert next(iter(datamodule.val_dataloader()))["image"].shape[1:] == (3, 64, 64)
    assert datamodule.info.input_size == (3, 64, 64)


def test_preprocess_letterboxes_and_maps_back(tmp_path):
    datamodule = make_datamodule(tmp_path)
    image = np.zeros((50, 100, 3), dtype=np.uint8)
    tensor, scale, pad = datamodule.letterbox_image(image)
    assert tensor.shape == (3, 64, 64) and scale == pytest.approx(0.64) and pad == (0, 16)
    assert torch.equal(datamodule.preprocess(image), tensor)
    assert tensor[0, 0, 0] == pytest.approx(PAD_VALUE / 255)
    back = unletterbox_boxes(np.array([[0, 16, 64, 48]]), scale, pad, image.shape[:2])
    np.testing.assert_allclose(back, [[0, 0, 100, 50]], atol=1e-4)


def test_user_data_errors(tmp_path):
    with pytest.raises(UserError, match="data.root"):
        make_datamodule(tmp_path, root=str(tmp_path / "missing"))
    generate_voc_facemask(tmp_path / "three", num_images=3, image_size=(64, 64), seed=0, empty_fraction=0.0)
    generate_voc_facemask(tmp_path / "two", num_images=2, image_size=(64, 64), seed=0, empty_fraction=0.0)
    with pytest.raises(UserError, match=r"data.split: fractions \{train: 0.7, val: 0.15, test: 0.15\} need at least 3 images"):
        make_datamodule(tmp_path, root=str(tmp_path / "two"))
    with pytest.raises(UserError, match="unknown class"):
        make_datamodule(tmp_path, root=str(tmp_path / "three"), class_names=["with_mask"])
