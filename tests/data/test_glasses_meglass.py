"""MeGlass list reader: tolerated variations and errors that name file and line."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.data.formats.meglass import read_meglass
from pipeline.utils.errors import UserError


def _touch_images(folder: Path, *names: str) -> None:
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), np.zeros((4, 4, 3), np.uint8))


def test_reads_crlf_comments_blank_lines_bom_and_trailing_spaces(tmp_path):
    _touch_images(tmp_path, "a.jpg", "sub/b.JPG", "c d.png")
    text = "\ufeff# MeGlass list\r\na.jpg 0  \r\n\r\n   \r\nsub/b.JPG\t1\r\n  # indented comment\r\nc d.png 1\r\n"
    (tmp_path / "meta.txt").write_bytes(text.encode("utf-8"))
    records, class_names = read_meglass(tmp_path / "meta.txt")
    assert class_names == ["no_glasses", "glasses"]
    assert [(r.path.relative_to(tmp_path).as_posix(), r.label) for r in records] == [
        ("a.jpg", 0),
        ("sub/b.JPG", 1),
        ("c d.png", 1),
    ]


def test_image_root_overrides_list_folder(tmp_path):
    _touch_images(tmp_path / "MeGlass_120x120", "x.jpg")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "meta.txt").write_text("x.jpg 1\n")
    records, _ = read_meglass(tmp_path / "lists" / "meta.txt", image_root=tmp_path / "MeGlass_120x120")
    assert records[0].path == tmp_path / "MeGlass_120x120" / "x.jpg"
    assert records[0].label == 1


def test_windows_backslash_paths(tmp_path):
    _touch_images(tmp_path, "sub/a.jpg")
    (tmp_path / "meta.txt").write_text("sub\\a.jpg 0\n")
    records, _ = read_meglass(tmp_path / "meta.txt")
    assert records[0].path == tmp_path / "sub" / "a.jpg"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("missing.jpg 0", "does not exist"),
        ("a.jpg 2", "label must be 0"),
        ("a.jpg yes", "label must be 0"),
        ("a.jpg", "expected '<image path> <0|1>'"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path, line, message):
    _touch_images(tmp_path, "a.jpg")
    (tmp_path / "meta.txt").write_text(f"# header\na.jpg 1\n{line}\n")
    with pytest.raises(UserError, match=message) as error:
        read_meglass(tmp_path / "meta.txt")
    assert f"{tmp_path / 'meta.txt'}:3:" in str(error.value)


def test_missing_list_file_and_empty_list(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_meglass(tmp_path / "nope.txt")
    (tmp_path / "meta.txt").write_text("# only a comment\n\n")
    with pytest.raises(UserError, match="no '<image path> <0|1>' lines"):
        read_meglass(tmp_path / "meta.txt")


def test_missing_image_root(tmp_path):
    (tmp_path / "meta.txt").write_text("a.jpg 0\n")
    with pytest.raises(UserError, match="image_root"):
        read_meglass(tmp_path / "meta.txt", image_root=tmp_path / "absent")
