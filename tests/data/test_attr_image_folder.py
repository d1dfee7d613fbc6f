"""Generic class-folder / CSV image reader."""

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.data.formats.image_folder import (
    drop_unreadable,
    read_image_csv,
    read_image_folder,
    read_labelled_images,
)
from pipeline.utils.errors import UserError


def _write_image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix.lower(), np.zeros((4, 4, 3), np.uint8))
    assert ok
    path.write_bytes(data.tobytes())
    return path


def _class_tree(root: Path) -> Path:
    _write_image(root / "no_glasses" / "a.jpg")
    _write_image(root / "no_glasses" / "B.PNG")
    _write_image(root / "glasses" / "x.JPEG")
    _write_image(root / "glasses" / "nested" / "y.png")
    (root / "glasses" / ".DS_Store").write_bytes(b"\x00")
    (root / "glasses" / "README.txt").write_text("about")
    (root / ".ipynb_checkpoints").mkdir()
    (root / "labels.txt").write_text("stray file at the root")
    return root


def test_class_folders_sorted_with_odd_extensions_and_stray_files(tmp_path):
    records, names = read_image_folder(_class_tree(tmp_path))
    assert names == ["glasses", "no_glasses"]
    got = sorted((r.path.relative_to(tmp_path).as_posix(), r.label) for r in records)
    assert got == [
        ("glasses/nested/y.png", 0),
        ("glasses/x.JPEG", 0),
        ("no_glasses/B.PNG", 1),
        ("no_glasses/a.jpg", 1),
    ]


def test_empty_class_folder_is_named_unless_allowed(tmp_path):
    root = _class_tree(tmp_path)
    (root / "sunglasses").mkdir()
    (root / "sunglasses" / "notes.txt").write_text("no images here")
    with pytest.raises(UserError, match=r"sunglasses.*no images"):
        read_image_folder(root)
    records, names = read_image_folder(root, allow_empty_classes=True)
    assert names == ["glasses", "no_glasses", "sunglasses"]
    assert {r.label for r in records} == {0, 1}


def test_given_class_names_fix_order_and_reject_unknown_folders(tmp_path):
    root = _class_tree(tmp_path)
    records, names = read_image_folder(root, class_names=["no_glasses", "glasses"])
    assert names == ["no_glasses", "glasses"]
    assert {r.path.name: r.label for r in records}["a.jpg"] == 0
    with pytest.raises(UserError, match="not one of the class names"):
        read_image_folder(root, class_names=["glasses"])
    with pytest.raises(UserError, match=r"missing.*no images"):
        read_image_folder(root, class_names=["glasses", "no_glasses", "missing"])


def test_no_class_folders_is_an_error(tmp_path):
    with pytest.raises(UserError, match="no class folders"):
        read_image_folder(tmp_path)


def test_csv_with_relative_and_absolute_paths_names_and_indices(tmp_path):
    rel = _write_image(tmp_path / "imgs" / "1.jpg")
    absolute = _write_image(tmp_path / "elsewhere" / "2.PNG")
    csv_path = tmp_path / "meta" / "labels.csv"
    csv_path.parent.mkdir()
    _write_image(tmp_path / "meta" / "imgs" / "3.jpg")
    csv_path.write_text(f"path,label,extra\nimgs/3.jpg,cat,x\n{absolute},1,y\n{rel},0,z\n")
    records, names = read_image_csv(csv_path, class_names=["dog", "cat"])
    assert names == ["dog", "cat"]
    assert [(r.path, r.label) for r in records] == [
        (tmp_path / "meta" / "imgs" / "3.jpg", 1),
        (absolute, 1),
        (rel, 0),
    ]


def test_csv_infers_class_names(tmp_path):
    _write_image(tmp_path / "a.jpg")
    (tmp_path / "names.csv").write_text("path,label\na.jpg,zebra\na.jpg,ant\n")
    records, names = read_image_csv(tmp_path / "names.csv")
    assert names == ["ant", "zebra"] and [r.label for r in records] == [1, 0]
    (tmp_path / "ints.csv").write_text("\ufeffpath,label\na.jpg, 2\na.jpg,0\n")
    records, names = read_image_csv(tmp_path / "ints.csv")
    assert names == ["0", "1", "2"] and [r.label for r in records] == [2, 0]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("a.jpg,cat\na.jpg,horse\n", r"labels.csv:3: label 'horse' is not a class"),
        ("a.jpg,7\n", r"labels.csv:2: label '7'"),
        ("a.jpg,cat\nmissing.jpg,cat\n", r"labels.csv:3: image .*missing\.jpg' does not exist"),
    ],
)
def test_csv_errors_name_the_row(tmp_path, rows, message):
    _write_image(tmp_path / "a.jpg")
    (tmp_path / "labels.csv").write_text("path,label\n" + rows)
    with pytest.raises(UserError, match=message):
        read_image_csv(tmp_path / "labels.csv", class_names=["dog", "cat"])


def test_csv_without_label_column_or_rows(tmp_path):
    (tmp_path / "labels.csv").write_text("file,class\na.jpg,cat\n")
    with pytest.raises(UserError, match=r"missing column\(s\) \['path', 'label'\]"):
        read_image_csv(tmp_path / "labels.csv")
    (tmp_path / "labels.csv").write_text("path,label\n")
    with pytest.raises(UserError, match="no rows"):
        read_image_csv(tmp_path / "labels.csv")


def test_dispatch_on_source_kind(tmp_path):
    root = _class_tree(tmp_path / "tree")
    (tmp_path / "list.CSV").write_text("path,label\ntree/glasses/x.JPEG,glasses\n")
    assert len(read_labelled_images(root)[0]) == 4
    records, names = read_labelled_images(tmp_path / "list.CSV")
    assert names == ["glasses"] and records[0].path.name == "x.JPEG"


def test_drop_unreadable_names_or_counts_corrupt_files(tmp_path, caplog):
    root = _class_tree(tmp_path)
    bad = root / "no_glasses" / "a.jpg"
    bad.write_bytes(b"not a jpeg")
    records, _ = read_image_folder(root)
    with pytest.raises(UserError, match=str(bad)):
        drop_unreadable(records)
    with caplog.at_level(logging.WARNING):
        kept = drop_unreadable(records, skip_bad_files=True)
    assert len(kept) == 3 and bad not in {r.path for r in kept}
    assert "skipped 1 unreadable image(s) of 4" in caplog.text
