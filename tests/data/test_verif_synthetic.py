"""Tests for the synthetic verification generator (written in the real format, read by the real reader)."""

import json

import numpy as np

from pipeline.data.face_parts import read_landmarks_csv
from pipeline.data.formats.verification import read_verification
from pipeline.data.io import load_image
from pipeline.data.synthetic.verification import generate_verification


def _generate(root, seed=0):
    return generate_verification(root, num_identities=4, images_per_identity=3, fakes_per_identity=2, image_size=32, seed=seed)


def test_generator_layout_read_back(tmp_path):
    records = read_verification(_generate(tmp_path))
    assert len(records) == 4 * 5
    assert sorted({r.identity for r in records}) == ["0", "1", "2", "3"]
    assert sum(r.is_fake for r in records) == 4 * 2
    assert load_image(records[0].path).shape == (32, 32, 3)
    folders = sorted(p.name for p in (tmp_path / "images").iterdir())
    keys = json.loads((tmp_path / "meta.json").read_text())
    assert "0002" in folders and not any(k.startswith("0002/") for k in keys)  # padded folder only
    assert "3" in folders and any(k.startswith("0003/") for k in keys)  # padded key only
    assert (tmp_path / "images" / "0000" / "0.JPG").exists()


def test_generator_is_deterministic(tmp_path):
    a, b, c = (_generate(tmp_path / name, seed) for name, seed in (("a", 0), ("b", 0), ("c", 1)))
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / "images/1/0.jpg").read_bytes() != (c / "images/1/0.jpg").read_bytes()


def test_generator_landmarks_cover_every_image_inside_it(tmp_path):
    _generate(tmp_path)
    table = read_landmarks_csv(tmp_path / "landmarks.csv")
    records = read_verification(tmp_path)
    assert set(table) == {r.path.resolve() for r in records}
    points = np.stack(list(table.values()))
    assert points.min() >= 0 and points.max() <= 32
    eyes_above_mouth = points[:, :2, 1].mean(1) < points[:, 3:, 1].mean(1)
    assert eyes_above_mouth.all()
