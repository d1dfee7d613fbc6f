"""Synthetic face-mask generator: real Kaggle VOC layout, read back by the real reader, deterministic."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

from pipeline.data.formats.voc import class_counts_per_image, read_voc_dataset
from pipeline.data.io import load_image
from pipeline.data.synthetic.voc_facemask import FACEMASK_CLASSES, generate_voc_facemask


def test_writes_kaggle_layout_read_by_the_voc_reader(tmp_path):
    generate_voc_facemask(tmp_path, num_images=40, image_size=(96, 128), seed=0)
    assert sorted(p.name for p in (tmp_path / "images").iterdir())[:2] == [
        "maksssksksss0.png",
        "maksssksksss1.png",
    ]
    root = ET.parse(tmp_path / "annotations" / "maksssksksss0.xml").getroot()
    assert [child.tag for child in root][:4] == ["folder", "filename", "size", "segmented"]
    obj = root.find("object")
    if obj is not None:
        assert [c.tag for c in obj] == ["name", "pose", "truncated", "occluded", "difficult", "bndbox"]
    images = read_voc_dataset(tmp_path, FACEMASK_CLASSES)
    assert len(images) == 40
    assert load_image(images[0].image_path).shape == (96, 128, 3)
    assert all(
        image.annotation_path is not None and (image.width, image.height) == (128, 96) for image in images
    )


def test_scenes_have_several_faces_all_classes_truncation_and_negatives(tmp_path):
    generate_voc_facemask(tmp_path, num_images=150, image_size=(128, 128), seed=0)
    images = read_voc_dataset(tmp_path, FACEMASK_CLASSES)
    counts = class_counts_per_image(images, 3)
    per_image = counts.sum(axis=1)
    assert per_image.max() <= 6 and (per_image >= 3).any() and (per_image == 0).any()
    shares = counts.sum(axis=0) / counts.sum()
    assert shares[0] > shares[1] > shares[2] > 0.02 and shares[2] < 0.15
    objects = [o for image in images for o in image.objects]
    assert any(o.truncated for o in objects) and not all(o.truncated for o in objects)
    assert all(0 <= o.box[0] < o.box[2] <= 128 and 0 <= o.box[1] < o.box[3] <= 128 for o in objects)


def test_mask_states_look_different(tmp_path):
    """The lower face is covered by a mask, the nose only by a correctly worn one: mean colours differ."""
    generate_voc_facemask(tmp_path, num_images=120, image_size=(128, 128), seed=2)
    lower_faces = {c: [] for c in range(3)}
    for image in read_voc_dataset(tmp_path, FACEMASK_CLASSES):
        pixels = load_image(image.image_path).astype(float)
        for o in image.objects:
            if not o.truncated:
                x0, y0, x1, y1 = (int(v) for v in o.box)
                nose_to_mouth = pixels[
                    y0 + (y1 - y0) * 55 // 100 : y0 + (y1 - y0) * 80 // 100,
                    x0 + (x1 - x0) // 3 : x1 - (x1 - x0) // 3,
                ]
                lower_faces[o.label].append(nose_to_mouth.reshape(-1, 3).std(axis=0).mean())
    # a bare lower face shows nostrils, lips and skin: more texture than the flat part of a mask
    assert np.mean(lower_faces[1]) > np.mean(lower_faces[0])


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, b, c = (
        generate_voc_facemask(tmp_path / n, num_images=3, image_size=(64, 64), seed=s)
        for n, s in (("a", 5), ("b", 5), ("c", 6))
    )
    for name in ("images/maksssksksss2.png", "annotations/maksssksksss2.xml"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    assert (a / "images/maksssksksss2.png").read_bytes() != (c / "images/maksssksksss2.png").read_bytes()
