"""Synthetic boostcamp generator: real layout, determinism, imbalance, and (slow) learnability."""

import csv
import hashlib
from collections import Counter

import numpy as np
import pytest

from pipeline.data.formats.boostcamp import (
    CLASS_NAMES,
    read_boostcamp_eval,
    read_boostcamp_train,
)
from pipeline.data.io import load_image
from pipeline.data.synthetic.boostcamp import generate_boostcamp


def _digest(root) -> str:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    h = hashlib.sha1()
    for p in files:
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_writes_the_real_layout_read_by_the_real_reader(tmp_path):
    root = generate_boostcamp(tmp_path, num_people=12, num_eval_people=3, image_size=(40, 30), seed=3)
    with (root / "train" / "train.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["id", "gender", "race", "age", "path"]
    assert all(r["path"] == f"{r['id']}_{r['gender']}_{r['race']}_{r['age']}" for r in rows)
    assert all(len(r["id"]) == 6 and r["id"].isdigit() for r in rows)

    records = read_boostcamp_train(root)
    assert len(records) == 12 * 7
    assert Counter(r.mask for r in records) == {0: 60, 1: 12, 2: 12}
    suffixes = {r.path.suffix for r in records}
    assert {".jpg", ".png", ".jpeg"} <= suffixes and any(s != s.lower() for s in suffixes)
    assert list((root / "train" / "images").rglob("._*"))  # AppleDouble junk, as in the real archive
    assert load_image(records[0].path).shape == (40, 30, 3)

    eval_records = read_boostcamp_eval(root)
    assert len(eval_records) == 3 * 7
    assert all(r.label is not None and 0 <= r.label < len(CLASS_NAMES) for r in eval_records)
    assert Counter(r.label // 6 for r in eval_records) == {0: 15, 1: 3, 2: 3}


def test_same_seed_same_files_other_seed_differs(tmp_path):
    kwargs = {"num_people": 4, "num_eval_people": 1, "image_size": (32, 24)}
    a = _digest(generate_boostcamp(tmp_path / "a", seed=7, **kwargs))
    b = _digest(generate_boostcamp(tmp_path / "b", seed=7, **kwargs))
    c = _digest(generate_boostcamp(tmp_path / "c", seed=8, **kwargs))
    assert a == b != c


def test_imbalance_resembles_the_real_data(tmp_path):
    root = generate_boostcamp(tmp_path, num_people=300, num_eval_people=1, image_size=(24, 18), seed=0)
    people = {r.person_id: r for r in read_boostcamp_train(root)}
    old_share = np.mean([r.age_group == 2 for r in people.values()])
    female_share = np.mean([r.gender == 1 for r in people.values()])
    assert 0.04 <= old_share <= 0.12
    assert 0.5 <= female_share <= 0.7
    assert {r.age_group for r in people.values()} == {0, 1, 2}


def test_images_of_one_person_vary(tmp_path):
    root = generate_boostcamp(tmp_path, num_people=2, num_eval_people=1, image_size=(48, 36), seed=0)
    records = read_boostcamp_train(root)
    wear = [load_image(r.path).astype(float) for r in records[:5]]
    assert all(np.abs(wear[0] - other).mean() > 1.0 for other in wear[1:])


@pytest.mark.slow
def test_cues_are_learnable_by_a_small_cnn(tmp_path):
    """300 people at 96x72, a 5-conv CNN, 12 epochs on 1 thread: 18-way val macro F1 >= 0.85."""
    import torch
    from torch import nn
    from torchmetrics.functional.classification import multiclass_f1_score

    from pipeline.data.splits import split_by_group

    torch.set_num_threads(1)
    torch.manual_seed(0)
    records = read_boostcamp_train(generate_boostcamp(tmp_path, num_people=300, seed=1))
    images = np.stack([load_image(r.path) for r in records])
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    y = torch.tensor([r.class_id for r in records])
    strata = [r.gender * 3 + r.age_group for r in records]
    split = split_by_group([r.person_id for r in records], {"train": 0.8, "val": 0.2}, seed=0, strata=strata)
    train, val = torch.from_numpy(split["train"]), torch.from_numpy(split["val"])

    def conv(i, o, stride=1):
        return nn.Sequential(nn.Conv2d(i, o, 3, stride, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU())

    model = nn.Sequential(
        conv(3, 32, 2), conv(32, 48), nn.MaxPool2d(2), conv(48, 96), nn.MaxPool2d(2),
        conv(96, 128), nn.MaxPool2d(2), conv(128, 128), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(128, 18),
    )  # fmt: skip
    epochs, batch = 12, 64
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = epochs * -(-len(train) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    for _ in range(epochs):
        model.train()
        order = train[torch.randperm(len(train))]
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            flip = (torch.rand(len(idx)) < 0.5)[:, None, None, None]
            inputs = torch.where(flip, x[idx].flip(3), x[idx])
            loss = nn.functional.cross_entropy(model(inputs), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        predictions = model(x[val]).argmax(1)
    f1 = multiclass_f1_score(predictions, y[val], num_classes=18, average="macro")
    assert f1 >= 0.85
