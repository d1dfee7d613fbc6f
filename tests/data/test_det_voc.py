"""Pascal VOC reader: real-format variations, errors naming the file, stratified image splits."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.data.formats.voc import (
    class_counts_per_image,
    image_strata,
    read_voc_annotation,
    read_voc_dataset,
    split_voc_images,
)
from pipeline.data.splits import assign_by_entries, read_split_file, write_split_json
from pipeline.utils.errors import UserError

CLASSES = ("with_mask", "without_mask", "mask_weared_incorrect")


def _image(path: Path, height: int = 60, width: int = 80) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((height, width, 3), 90, np.uint8))


def _xml(
    path: Path,
    body: str,
    filename: str | None = "img.png",
    size: str = "<width>80</width><height>60</height>",
):
    path.parent.mkdir(parents=True, exist_ok=True)
    name = f"<filename>{filename}</filename>" if filename is not None else ""
    path.write_text(
        f"<annotation><folder>images</folder>{name}<size>{size}<depth>3</depth></size>{body}</annotation>"
    )


def _obj(name: str, box, truncated: str | None = "0", difficult: str | None = "0") -> str:
    flags = "".join(
        f"<{t}>{v}</{t}>" for t, v in (("truncated", truncated), ("difficult", difficult)) if v is not None
    )
    coords = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True))
    return f"<object><name>{name}</name><pose>Unspecified</pose>{flags}<bndbox>{coords}</bndbox></object>"


@pytest.fixture
def voc(tmp_path: Path) -> Path:
    _image(tmp_path / "images" / "img.png")
    return tmp_path


def _read_one(root: Path, body: str, **kwargs) -> object:
    _xml(root / "annotations" / "img.xml", body, **kwargs)
    return read_voc_annotation(root / "annotations" / "img.xml", root / "images", CLASSES)


def test_reads_one_based_boxes_as_zero_based_pixels_with_flags(voc):
    image = _read_one(
        voc, _obj("without_mask", (11, 21, 30, 40), truncated="1") + _obj("with_mask", (1.5, 2.5, 9.5, 8))
    )
    assert (image.width, image.height) == (80, 60)
    first, second = image.objects
    assert (first.name, first.label, first.box) == ("without_mask", 1, (10.0, 20.0, 30.0, 40.0))
    assert first.truncated and not first.difficult
    assert second.box == (0.5, 1.5, 9.5, 8.0) and second.label == 0


def test_missing_flags_default_to_false(voc):
    (obj,) = _read_one(voc, _obj("with_mask", (5, 5, 20, 20), truncated=None, difficult=None)).objects
    assert not obj.truncated and not obj.difficult


def test_boxes_outside_the_image_are_clipped_and_empty_ones_dropped(voc, caplog):
    body = (
        _obj("with_mask", (-10, 50, 30, 90))
        + _obj("with_mask", (100, 10, 120, 20))
        + _obj("with_mask", (70, 5, 200, 20))
    )
    image = _read_one(voc, body)
    assert [o.box for o in image.objects] == [(0.0, 49.0, 30.0, 60.0), (69.0, 4.0, 80.0, 20.0)]
    assert "dropped 1 boxes" in caplog.text


def test_annotation_without_objects_is_a_negative(voc):
    assert _read_one(voc, "").objects == ()


def test_size_missing_or_zero_is_read_from_the_image(voc):
    assert (_read_one(voc, "", size="").width, _read_one(voc, "", size="").height) == (80, 60)
    image = _read_one(voc, "", size="<width>0</width><height>0</height>")
    assert (image.width, image.height) == (80, 60)


@pytest.mark.parametrize("filename", ["img.jpg", "IMG.PNG", None, "other.png"])
def test_image_found_despite_filename_mismatch(voc, filename):
    assert _read_one(voc, "", filename=filename).image_path == voc / "images" / "img.png"


def test_missing_image_names_the_annotation(voc):
    _xml(voc / "annotations" / "ghost.xml", "", filename="ghost.png")
    with pytest.raises(UserError, match="ghost.xml"):
        read_voc_annotation(voc / "annotations" / "ghost.xml", voc / "images", CLASSES)


def test_unknown_class_raises_naming_file_and_class_or_is_skipped(voc):
    body = _obj("with_mask", (5, 5, 20, 20)) + _obj("face_shield", (30, 5, 50, 20))
    with pytest.raises(UserError, match=r"img\.xml.*face_shield"):
        _read_one(voc, body)
    read = read_voc_dataset(voc, CLASSES, unknown_class="skip")
    assert [o.name for o in read[0].objects] == ["with_mask"]


def test_malformed_xml_raises_naming_file_or_is_skipped(voc):
    _xml(voc / "annotations" / "img.xml", _obj("with_mask", (5, 5, 20, 20)))
    _image(voc / "images" / "bad.png")
    (voc / "annotations" / "bad.xml").write_text("<annotation><filename>bad.png</filename><object>")
    with pytest.raises(UserError, match="bad.xml"):
        read_voc_dataset(voc, CLASSES)
    images = read_voc_dataset(voc, CLASSES, skip_bad_files=True)
    # bad.png is skipped with its broken XML: its objects are unknown, so it is no negative either
    assert [(i.image_path.name, len(i.objects)) for i in images] == [("img.png", 1)]


def test_non_numeric_coordinate_names_the_file(voc):
    with pytest.raises(UserError, match=r"img\.xml.*xmax"):
        _read_one(voc, _obj("with_mask", (5, 5, "abc", 20)))


def test_dataset_keeps_images_without_xml_as_negatives_and_ignores_stray_files(voc):
    _xml(voc / "annotations" / "img.xml", _obj("with_mask", (5, 5, 20, 20)))
    _image(voc / "images" / "lonely.JPG", height=30, width=40)
    (voc / "images" / ".DS_Store").write_text("junk")
    (voc / "annotations" / "README.txt").write_text("notes")
    images = read_voc_dataset(voc, CLASSES)
    assert [i.image_path.name for i in images] == ["img.png", "lonely.JPG"]
    lonely = images[1]
    assert (
        lonely.annotation_path is None and lonely.objects == () and (lonely.width, lonely.height) == (40, 30)
    )


def test_missing_dataset_folder_names_the_key(tmp_path):
    with pytest.raises(UserError, match="data.annotations_dir"):
        (tmp_path / "images").mkdir()
        read_voc_dataset(tmp_path, CLASSES)


def _dataset(root: Path, num_images: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for n in range(num_images):
        _image(root / "images" / f"im{n}.png")
        labels = rng.choice(3, size=int(rng.integers(0, 6)), p=[0.7, 0.2, 0.1])
        _xml(
            root / "annotations" / f"im{n}.xml",
            "".join(_obj(CLASSES[c], (5, 5, 20, 20)) for c in labels),
            f"im{n}.png",
        )


def test_class_counts_per_image(tmp_path):
    _image(tmp_path / "images" / "img.png")
    _xml(
        tmp_path / "annotations" / "img.xml",
        _obj("with_mask", (1, 1, 9, 9)) * 2 + _obj("mask_weared_incorrect", (1, 1, 9, 9)),
    )
    counts = class_counts_per_image(read_voc_dataset(tmp_path, CLASSES), 3)
    assert counts.tolist() == [[2, 0, 1]]


def test_strata_separate_rare_class_and_counts_and_merge_small_groups():
    common = [[1, 0, 0]] * 10 + [[5, 2, 0]] * 6 + [[9, 0, 0]]
    rare = [[3, 0, 1]] * 5 + [[9, 0, 1]]
    strata = image_strata(np.array(common + rare), min_members=4)
    # the lone 9-face image joins its neighbour bucket, in both rare-class groups
    assert len(set(strata[:10])) == 1 and len(set(strata[10:17])) == 1 and len(set(strata[17:])) == 1
    assert len({strata[0], strata[10], strata[17]}) == 3


def test_split_is_image_disjoint_reproducible_and_roundtrips_through_json(tmp_path):
    _dataset(tmp_path, 60)
    images = read_voc_dataset(tmp_path, CLASSES)
    fractions = {"train": 0.6, "val": 0.2, "test": 0.2}
    split = split_voc_images(images, 3, fractions, seed=3)
    names = {k: [i.image_path.name for i in v] for k, v in split.items()}
    assert sum(len(v) for v in names.values()) == 60
    assert len(set().union(*names.values())) == 60
    again = split_voc_images(images, 3, fractions, seed=3)
    assert {k: [i.image_path.name for i in v] for k, v in again.items()} == names
    keys = [i.image_path.name for i in images]
    by_name = {i.image_path.name: n for n, i in enumerate(images)}
    write_split_json(tmp_path / "split.json", keys, {k: [by_name[n] for n in v] for k, v in names.items()})
    loaded = assign_by_entries(read_split_file(tmp_path / "split.json"), keys, keys, "split.json")
    assert {k: sorted(keys[i] for i in v) for k, v in loaded.items()} == {k: sorted(v) for k, v in names.items()}


def test_split_keeps_rare_class_in_every_split(tmp_path):
    _dataset(tmp_path, 80, seed=1)
    images = read_voc_dataset(tmp_path, CLASSES)
    split = split_voc_images(images, 3, {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
    for part in split.values():
        assert class_counts_per_image(part, 3)[:, 2].sum() > 0


def test_split_file_rejects_unknown_or_repeated_images(tmp_path):
    _dataset(tmp_path, 4)
    keys = [i.image_path.name for i in read_voc_dataset(tmp_path, CLASSES)]
    (tmp_path / "s.json").write_text('{"train": ["im0.png", "nope.png"]}')
    with pytest.raises(UserError, match="nope.png"):
        assign_by_entries(read_split_file(tmp_path / "s.json"), keys, keys, "s.json")
    (tmp_path / "s.json").write_text('{"train": ["im0.png"], "val": ["im0.png"]}')
    with pytest.raises(UserError, match="in both train and val"):
        read_split_file(tmp_path / "s.json")


def test_swapped_corners_are_reordered(voc):
    (obj,) = _read_one(voc, _obj("with_mask", (30, 40, 11, 21))).objects
    assert obj.box == (10.0, 20.0, 30.0, 40.0)
