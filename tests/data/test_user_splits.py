"""Splits users control, the same way in every task: pre-split layouts of each format, split files
(round trip through results/split.json), group splits, and fractions that cannot be met."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.data.classification import ImageFolderDataModule
from pipeline.data.detection import VocDetectionDataModule
from pipeline.data.splits import split_by_group
from pipeline.data.synthetic.verification import generate_verification
from pipeline.data.synthetic.voc_facemask import generate_voc_facemask
from pipeline.data.verification import VerificationDataModule
from pipeline.utils.errors import UserError


def _image(path: Path, value: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((8, 8, 3), value, np.uint8))
    return path


def _folder_module(root: Path, tmp_path: Path, **kwargs) -> ImageFolderDataModule:
    options = dict(root=str(root), image_size=[8, 8], num_workers=0, batch_size=4, seed=0,
                   split_out=str(tmp_path / "run" / "results" / "split.json"))
    datamodule = ImageFolderDataModule(**{**options, **kwargs})
    datamodule.setup("fit")
    return datamodule


def _names(dataset) -> set[str]:
    return {s.path.name for s in dataset.samples}


def _people_set(root: Path, people: int = 12, per_person: int = 3) -> Path:
    """``root/<class>/<person>_<n>.png``: each person in one class, several photos each."""
    for person in range(people):
        for n in range(per_person):
            _image(root / ("cat" if person % 2 else "dog") / f"p{person:02d}_{n}.png", person)
    return root


def test_presplit_class_folders_are_the_split_and_classes_are_the_class_folders(tmp_path, caplog):
    root = tmp_path / "set"
    for split, count in (("train", 4), ("validation", 2)):
        for cls in ("female", "male"):
            for i in range(count):
                _image(root / split / cls / f"{split}_{cls}_{i}.jpg")
    with caplog.at_level(logging.WARNING):
        datamodule = _folder_module(root, tmp_path)
    assert datamodule.class_names == ["female", "male"]
    assert len(datamodule.datasets["train"]) == 8 and len(datamodule.datasets["val"]) == 4
    assert all(name.startswith("validation_") for name in _names(datamodule.datasets["val"]))
    assert datamodule.datasets["test"] is datamodule.datasets["val"]
    assert "no test split: test metrics are computed on the val split" in caplog.text
    saved = json.loads((tmp_path / "run" / "results" / "split.json").read_text())
    assert saved["val"][0].startswith("validation/") and saved["test"] == []


def test_csv_split_column_and_group_column(tmp_path):
    rows = ["path,label,person,split"]
    for person in range(6):
        for n in range(2):
            _image(tmp_path / "img" / f"{person}_{n}.png")
            rows.append(f"img/{person}_{n}.png,{person % 2},{person},{['train', 'train', 'train', 'train', 'valid', 'test'][person]}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    datamodule = _folder_module(tmp_path / "labels.csv", tmp_path)
    assert _names(datamodule.datasets["val"]) == {"4_0.png", "4_1.png"}
    assert _names(datamodule.datasets["test"]) == {"5_0.png", "5_1.png"}
    rows = [",".join(row.split(",")[:3]) for row in rows]
    (tmp_path / "nosplit.csv").write_text("\n".join(rows) + "\n")
    grouped = _folder_module(tmp_path / "nosplit.csv", tmp_path / "g", group_by="person",
                             split={"train": 0.5, "val": 0.25, "test": 0.25})
    people = {s: {n.split("_")[0] for n in _names(grouped.datasets[s])} for s in ("train", "val", "test")}
    assert not (people["train"] & people["val"] or people["train"] & people["test"] or people["val"] & people["test"])


def test_group_by_regex_keeps_each_person_in_one_split(tmp_path):
    root = _people_set(tmp_path / "set")
    datamodule = _folder_module(root, tmp_path, group_by=r"^(p\d+)_", split={"train": 0.5, "val": 0.25, "test": 0.25})
    people = {s: {n.split("_")[0] for n in _names(datamodule.datasets[s])} for s in ("train", "val", "test")}
    assert sum(len(p) for p in people.values()) == 12
    assert not (people["train"] & people["val"] or people["train"] & people["test"] or people["val"] & people["test"])
    with pytest.raises(UserError, match="data.group_by: regex 'q' does not match"):
        _folder_module(root, tmp_path / "bad", group_by="q")


def test_synthetic_image_folder_demo_splits_by_person(tmp_path):
    datamodule = ImageFolderDataModule(cache_dir=str(tmp_path / "cache"), image_size=[8, 8], num_workers=0,
                                       batch_size=4, synthetic={"num_people": 20, "image_size": [32, 24], "seed": 0})
    datamodule.prepare_data()
    datamodule.setup("fit")
    people = {s: {n.split("_")[0] for n in _names(datamodule.datasets[s])} for s in ("train", "val", "test")}
    assert people["train"] and not (people["train"] & people["val"] or people["train"] & people["test"])


def test_split_json_round_trip_reproduces_the_split(tmp_path):
    root = _people_set(tmp_path / "set")
    first = _folder_module(root, tmp_path / "a", seed=1)
    saved = tmp_path / "a" / "run" / "results" / "split.json"
    again = _folder_module(root, tmp_path / "b", seed=99, split_file=str(saved))
    for split in ("train", "val", "test"):
        assert _names(again.datasets[split]) == _names(first.datasets[split])
    assert json.loads((tmp_path / "b" / "run" / "results" / "split.json").read_text()) == json.loads(saved.read_text())


def test_split_file_csv_of_groups(tmp_path):
    root = _people_set(tmp_path / "set")
    people = [f"p{i:02d}" for i in range(12)]
    lines = ["group,split"] + [f"{p},{'train' if i < 8 else 'val' if i < 10 else 'test'}" for i, p in enumerate(people)]
    (tmp_path / "split.csv").write_text("\n".join(lines) + "\n")
    datamodule = _folder_module(root, tmp_path, group_by=r"^(p\d+)_", split_file=str(tmp_path / "split.csv"))
    assert {n.split("_")[0] for n in _names(datamodule.datasets["val"])} == {"p08", "p09"}
    absolute = [f"{p},{s}" for p, s in (
        *((root / "dog" / f"p{i:02d}_{n}.png", "train") for i in range(0, 8, 2) for n in range(3)),
        *((root / "cat" / f"p{i:02d}_{n}.png", "train") for i in range(1, 8, 2) for n in range(3)),
        *((root / "dog" / f"p{i:02d}_{n}.png", "val") for i in (8,) for n in range(3)),
        *((root / "cat" / f"p{i:02d}_{n}.png", "val") for i in (9,) for n in range(3)),
    )]
    (tmp_path / "paths.csv").write_text("path,split\n" + "\n".join(absolute) + "\n")
    by_path = _folder_module(root, tmp_path / "p", split_file=str(tmp_path / "paths.csv"))
    assert {n.split("_")[0] for n in _names(by_path.datasets["val"])} == {"p08", "p09"}
    assert by_path.datasets["test"] is by_path.datasets["val"]
    (tmp_path / "split.csv").write_text("group,split\nnobody,train\n")
    with pytest.raises(UserError, match="'nobody' names no item, group or file"):
        _folder_module(root, tmp_path / "x", group_by=r"^(p\d+)_", split_file=str(tmp_path / "split.csv"))


def test_voc_image_sets_are_the_split(tmp_path):
    root = tmp_path / "voc"
    generate_voc_facemask(root, num_images=12, image_size=(64, 64), seed=0)
    (root / "images").rename(root / "JPEGImages")
    (root / "annotations").rename(root / "Annotations")
    stems = sorted(p.stem for p in (root / "JPEGImages").iterdir())
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets" / "Main" / "train.txt").write_text("\n".join(stems[:8]) + "\n")
    (root / "ImageSets" / "Main" / "val.txt").write_text("\n".join(stems[8:10]) + "\n")
    (root / "ImageSets" / "Main" / "test.txt").write_text("\n".join(stems[10:]) + "\n")
    datamodule = VocDetectionDataModule(root=str(root), image_size=64, batch_size=4, num_workers=0,
                                        split_out=str(tmp_path / "split.json"))
    datamodule.setup("fit")
    assert sorted(i.image_path.stem for i in datamodule.splits["val"]) == stems[8:10]
    assert len(datamodule.splits["train"]) == 8 and len(datamodule.splits["test"]) == 2


def test_tiny_detection_set_splits_without_a_traceback(tmp_path):
    generate_voc_facemask(tmp_path / "tiny", num_images=12, image_size=(64, 64), seed=0)
    datamodule = VocDetectionDataModule(root=str(tmp_path / "tiny"), image_size=64, batch_size=4, num_workers=0)
    datamodule.setup("fit")
    assert [len(datamodule.splits[s]) for s in ("train", "val", "test")] == [8, 2, 2]


def test_verification_presplit_roots(tmp_path):
    for split, count in (("train", 6), ("val", 3), ("test", 3)):
        generate_verification(tmp_path / "set" / split, num_identities=count, images_per_identity=2,
                              fakes_per_identity=0, seed=len(split), image_size=16)
    datamodule = VerificationDataModule(root=str(tmp_path / "set"), image_size=16, batch_size=4,
                                        images_per_identity=2, num_workers=0)
    datamodule.setup("fit")
    assert [len(datamodule.datasets[s]) for s in ("train", "val", "test")] == [12, 6, 6]
    labels = {s: {r.identity_index for r in datamodule.datasets[s].records} for s in ("train", "val", "test")}
    assert not (labels["train"] & labels["val"] or labels["val"] & labels["test"])
    assert datamodule.info.val_has_fakes is False


def test_unmet_fractions_are_one_line():
    with pytest.raises(UserError) as info:
        split_by_group(["a", "b"], {"train": 0.8, "val": 0.1, "test": 0.1}, seed=0, what="people")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("data.split: fractions {train: 0.8, val: 0.1, test: 0.1} need at least 3 people")
    assert "has 2" in message


def test_split_counts_are_exact_and_small_splits_get_one_group():
    out = split_by_group(list(range(12)), {"train": 0.7, "val": 0.15, "test": 0.15}, seed=0)
    assert [len(out[s]) for s in ("train", "val", "test")] == [8, 2, 2]
    out = split_by_group(list(range(5)), {"train": 0.9, "val": 0.05, "test": 0.05}, seed=0)
    assert [len(out[s]) for s in ("train", "val", "test")] == [3, 1, 1]


def _retest(datamodule, name: str = "the other set"):
    """``datamodule`` set up as bin/test.py sets up another data root than the run's."""
    datamodule.splitter.retest_of = name
    datamodule.setup("fit")
    return datamodule


def test_a_retest_on_another_set_tests_all_of_it_unless_it_has_a_split_of_its_own(tmp_path, caplog):
    """Every datamodule family that reads a root asks the SplitChooser: with ``retest_of`` (bin/test.py on another
    data.root), a set with no split of its own is tested whole, one with its own split (folders, a split column,
    VOC ImageSets, pre-split identities) keeps it; the log says which."""
    from pipeline.data.glasses import GlassesDataModule

    caplog.set_level(logging.INFO)
    people = _people_set(tmp_path / "people")  # 36 images, no split of their own
    folder = _retest(ImageFolderDataModule(root=str(people), image_size=[8, 8], num_workers=0, batch_size=4,
                                           split_out=str(tmp_path / "f" / "split.json")))
    assert _names(folder.datasets["test"]) == {p.name for p in people.rglob("*.png")} and len(folder.datasets["test"]) == 36
    assert "testing all 36 items of the other set: it has no split of its own" in caplog.text
    assert len(json.loads((tmp_path / "f" / "split.json").read_text())["test"]) == 36
    for path in people.rglob("*.png"):
        _image(tmp_path / "glasses" / {"cat": "glasses", "dog": "no_glasses"}[path.parent.name] / path.name)
    glasses = _retest(GlassesDataModule(root=str(tmp_path / "glasses"), format="folder", num_workers=0))
    assert len(glasses.datasets["test"]) == 36

    caplog.clear()
    rows = ["path,label,split"] + [f"people/{p.relative_to(people).as_posix()},{p.parent.name},"
                                   f"{'test' if p.stem.endswith('_0') else 'train' if p.stem.endswith('_1') else 'val'}"
                                   for p in sorted(people.rglob("*.png"))]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    csv_split = _retest(ImageFolderDataModule(root=str(tmp_path / "labels.csv"), image_size=[8, 8], num_workers=0,
                                              batch_size=4))
    assert len(csv_split.datasets["test"]) == 12 and all(n.endswith("_0.png") for n in _names(csv_split.datasets["test"]))
    assert "testing its own test split: 12 of the 36 items of the other set" in caplog.text

    voc = tmp_path / "voc"
    generate_voc_facemask(voc, num_images=12, image_size=(64, 64), seed=0)
    whole = _retest(VocDetectionDataModule(root=str(voc), image_size=64, batch_size=4, num_workers=0))
    assert len(whole.splits["test"]) == 12
    stems = sorted(p.stem for p in (voc / "images").iterdir())
    (voc / "images").rename(voc / "JPEGImages")
    (voc / "annotations").rename(voc / "Annotations")
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    for split, part in (("train", stems[:8]), ("val", stems[8:10]), ("test", stems[10:])):
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(part) + "\n")
    own = _retest(VocDetectionDataModule(root=str(voc), image_size=64, batch_size=4, num_workers=0))
    assert sorted(i.image_path.stem for i in own.splits["test"]) == stems[10:]

    generate_verification(tmp_path / "faces", num_identities=6, images_per_identity=2, fakes_per_identity=0, seed=1,
                          image_size=16)
    faces = _retest(VerificationDataModule(root=str(tmp_path / "faces"), image_size=16, batch_size=4,
                                           images_per_identity=2, num_workers=0))
    assert len(faces.datasets["test"]) == 12
    for split, count in (("train", 6), ("val", 3), ("test", 3)):
        generate_verification(tmp_path / "split" / split, num_identities=count, images_per_identity=2,
                              fakes_per_identity=0, seed=len(split), image_size=16)
    split_faces = _retest(VerificationDataModule(root=str(tmp_path / "split"), image_size=16, batch_size=4,
                                                 images_per_identity=2, num_workers=0))
    assert len(split_faces.datasets["test"]) == 6


def test_a_share_too_large_to_count_with_is_one_line_naming_its_key():
    from pipeline.data.splits import split_counts

    with pytest.raises(UserError, match=r"^data.split.val: '1e\+308' is not a share"):
        split_counts(10, {"train": 0.8, "val": 1e308, "test": 0.1})  # n x share overflowed to inf: a traceback before
