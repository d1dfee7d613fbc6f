"""Synthetic MeGlass generator: readable by the real reader, deterministic, and learnable (slow)."""

import json

import numpy as np
import pytest
import torch

from pipeline.data.eye_zone import EyeZonePreprocessor
from pipeline.data.formats.meglass import read_meglass
from pipeline.data.io import load_image
from pipeline.data.synthetic.glasses import generate_meglass


def test_generator_writes_a_readable_meglass_list(tmp_path):
    list_file = generate_meglass(tmp_path, num_images=40, seed=0, images_per_identity=4)
    assert list_file == tmp_path / "meta.txt"
    records, class_names = read_meglass(list_file)
    assert class_names == ["no_glasses", "glasses"]
    assert len(records) == 40
    assert {r.label for r in records} == {0, 1}
    assert len({r.path.name.split("_")[0] for r in records}) == 10  # identities, for group splits
    image = load_image(records[0].path)
    assert image.shape == (120, 120, 3)
    assert EyeZonePreprocessor()(image).shape == (82, 82, 3)


def test_generator_is_deterministic_and_size_independent(tmp_path):
    generate_meglass(tmp_path / "a", num_images=12, seed=5, image_size=96)
    generate_meglass(tmp_path / "b", num_images=6, seed=5, image_size=96)
    generate_meglass(tmp_path / "c", num_images=6, seed=6, image_size=96)
    assert load_image(tmp_path / "a/images/id00000_000000.jpg").shape == (96, 96, 3)
    lines_a = (tmp_path / "a/meta.txt").read_text().splitlines()
    assert lines_a[:6] == (tmp_path / "b/meta.txt").read_text().splitlines()
    for name in (line.split()[0] for line in lines_a[:6]):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a/images/id00000_000000.jpg").read_bytes() != (
        tmp_path / "c/images/id00000_000000.jpg"
    ).read_bytes()


def test_photos_have_boxes_inside_the_scene_and_no_face_examples(tmp_path):
    generate_meglass(tmp_path, num_images=4, seed=0, num_photos=10)
    faces = json.loads((tmp_path / "photos/faces.json").read_text())
    assert len(faces) == 10
    assert sum(entry["face_box"] is None for entry in faces.values()) == 2
    for name, entry in faces.items():
        photo = load_image(tmp_path / "photos" / name)
        if entry["face_box"] is not None:
            x, y, w, h = entry["face_box"]
            assert 0 <= x and 0 <= y and x + w <= photo.shape[1] and y + h <= photo.shape[0]
            assert entry["label"] in (0, 1)
            assert photo.shape[0] > h or photo.shape[1] > w  # the face is smaller than the scene


@pytest.mark.slow
def test_glasses_cnn_learns_synthetic_eye_zones(tmp_path):
    """Plain PyTorch loop on 1 thread: about 2 minutes to reach validation accuracy >= 0.95."""
    import timm
    import torch.nn.functional as F

    import pipeline.modules.tiny_cnn  # noqa: F401  (registers glasses_cnn)
    from pipeline.data.samplers.share import ShareBatchSampler

    torch.set_num_threads(1)
    torch.manual_seed(0)
    records, _ = read_meglass(generate_meglass(tmp_path, num_images=3000, seed=7))
    preprocess = EyeZonePreprocessor()
    zones = np.stack([preprocess(load_image(r.path)) for r in records])
    images = torch.from_numpy(zones).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    labels = torch.tensor([r.label for r in records])
    train = 2400  # 4 images per identity: the split is identity-disjoint
    model = timm.create_model("glasses_cnn", num_classes=2)
    sampler = ShareBatchSampler(labels[:train].numpy(), batch_size=64, seed=0)
    epochs = 8
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 3e-3, total_steps=epochs * len(sampler))
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        model.train()
        for batch in sampler:
            x = images[batch]
            flip = torch.rand(len(batch)) < 0.5
            x[flip] = x[flip].flip(-1)
            loss = F.cross_entropy(model(x), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(images[train:]).argmax(1) == labels[train:]).float().mean().item()
    assert accuracy >= 0.95
