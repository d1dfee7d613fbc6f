"""Glasses datamodule: both readers, person-disjoint splits, share batches, eye zone first in every pipeline."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from pipeline.data.glasses import GlassesDataModule, identity_of
from pipeline.data.samplers.share import ShareBatchSampler
from pipeline.data.synthetic.glasses import generate_meglass
from pipeline.utils.errors import UserError


@pytest.fixture(scope="module")
def meglass_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("meglass")
    generate_meglass(root, num_images=120, seed=3)
    return root


def test_identity_of_meglass_synthetic_and_plain_names():
    assert identity_of(Path("a/10001@N03_identity_1@2914227396_0.jpg")) == "10001@N03_identity_1"
    assert identity_of(Path("images/id00012_000049.jpg")) == "id00012"
    assert identity_of(Path("x/holiday.png")) == "x/holiday.png"


def test_meglass_splits_are_person_disjoint_and_share_batches(meglass_root):
    dm = GlassesDataModule(root=str(meglass_root), batch_size=16, num_workers=0, seed=1, augment=[])
    dm.setup()
    people = {split: {identity_of(s.path) for s in ds.samples} for split, ds in dm.datasets.items()}
    assert not people["train"] & people["val"] and not people["train"] & people["test"]
    assert dm.info.class_counts == np.bincount(dm.datasets["train"].labels(), minlength=2).tolist()
    sampler = dm.train_sampler(dm.datasets["train"])
    assert isinstance(sampler, ShareBatchSampler)
    labels = dm.datasets["train"].labels()
    for batch in sampler:
        assert 0.2 <= labels[batch].mean() <= 0.5


def test_val_items_are_preprocessed_eye_zones(meglass_root):
    dm = GlassesDataModule(root=str(meglass_root), num_workers=0, image_size=64)
    dm.setup()
    item = dm.datasets["val"][0]
    assert item["image"].shape == (3, 64, 64) and item["image"].dtype == torch.float32
    rgb = cv2.cvtColor(cv2.imread(str(dm.datasets["val"].samples[0].path)), cv2.COLOR_BGR2RGB)
    torch.testing.assert_close(dm.preprocess(rgb), item["image"], rtol=0, atol=0)
    # The bottom of the 64x64 eye zone is black padding: only the top half of the face is used.
    black = -torch.tensor(dm.mean) / torch.tensor(dm.std)
    torch.testing.assert_close(dm.preprocess(rgb)[:, -8:], black[:, None, None].expand(3, 8, 64))


def test_folder_format_negative_class_first(tmp_path):
    for name, count in (("glasses", 6), ("no_glasses", 10)):
        (tmp_path / name).mkdir()
        for i in range(count):
            cv2.imwrite(str(tmp_path / name / f"{i}.JPG"), np.full((60, 60, 3), 40 * (name == "glasses"), np.uint8))
    (tmp_path / "glasses" / ".DS_Store").write_bytes(b"junk")
    dm = GlassesDataModule(root=str(tmp_path), format="folder", num_workers=0, split={"train": 0.5, "val": 0.25, "test": 0.25})
    dm.setup()
    assert dm.info.class_names == ["no_glasses", "glasses"]
    assert sum(len(ds) for ds in dm.datasets.values()) == 16


def test_unknown_format_is_a_user_error():
    with pytest.raises(UserError, match="data.format"):
        GlassesDataModule(format="coco")


def write_people(root: Path, people: int = 8, photos: int = 5) -> None:
    """``<class>/<person>_<photo>.jpg``: NUAA-style names whose person only a regex can read."""
    for person in range(people):
        name = "glasses" if person % 2 else "no_glasses"
        (root / name).mkdir(parents=True, exist_ok=True)
        for photo in range(photos):
            cv2.imwrite(str(root / name / f"{person:04d}_{photo:02d}.jpg"), np.full((40, 40, 3), 10 * person, np.uint8))


def test_auto_format_reads_class_folders_and_group_by_keeps_people_apart(tmp_path):
    write_people(tmp_path)
    split = {"train": 0.5, "val": 0.25, "test": 0.25}
    dm = GlassesDataModule(root=str(tmp_path), group_by=r"^(\d+)_", num_workers=0, split=split)
    dm.setup()
    assert dm.format == "folder" and dm.info.class_names == ["no_glasses", "glasses"]
    people = {name: {s.path.name[:4] for s in ds.samples} for name, ds in dm.datasets.items()}
    assert [len(people[name]) for name in ("train", "val", "test")] == [4, 2, 2]
    assert not people["train"] & people["val"] and not people["train"] & people["test"] and not people["val"] & people["test"]


def test_names_without_a_person_split_per_image_with_a_warning(tmp_path, caplog):
    write_people(tmp_path)
    dm = GlassesDataModule(root=str(tmp_path), num_workers=0, split={"train": 0.5, "val": 0.25, "test": 0.25})
    with caplog.at_level("WARNING"):
        dm.setup()
    assert "data.group_by" in caplog.text and "per image" in caplog.text
    assert sum(len(ds) for ds in dm.datasets.values()) == 40


def test_auto_format_reads_a_meglass_list(meglass_root):
    dm = GlassesDataModule(root=str(meglass_root), num_workers=0)
    dm.setup()
    assert dm.format == "meglass"


def test_a_root_with_neither_layout_is_one_line(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(UserError, match=r"data.root: .* neither a MeGlass list \(meta.txt"):
        GlassesDataModule(root=str(tmp_path), num_workers=0).setup()
