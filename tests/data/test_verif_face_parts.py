"""Tests for landmark CSV reading and face-part cutout."""

import albumentations as A
import numpy as np
import pytest

from pipeline.data.face_parts import FacePartCutout, cut_out_part, part_box, read_landmarks_csv
from pipeline.utils.errors import UserError

POINTS = np.array([[20.0, 24.0], [40.0, 24.0], [30.0, 34.0], [24.0, 44.0], [36.0, 44.0]])


def test_read_landmarks_csv_resolves_paths_against_csv_folder(tmp_path):
    (tmp_path / "lm.csv").write_text("path,lx,ly,rx,ry,nx,ny,mlx,mly,mrx,mry,score\nimgs/a.jpg,1,2,3,4,5,6,7,8,9,10,0.9\n")
    table = read_landmarks_csv(tmp_path / "lm.csv")
    np.testing.assert_array_equal(table[(tmp_path / "imgs" / "a.jpg").resolve()], np.arange(1, 11).reshape(5, 2))


def test_read_landmarks_csv_errors(tmp_path):
    (tmp_path / "cols.csv").write_text("path,lx,ly\na.jpg,1,2\n")
    with pytest.raises(UserError, match="missing columns"):
        read_landmarks_csv(tmp_path / "cols.csv")
    (tmp_path / "nan.csv").write_text("path,lx,ly,rx,ry,nx,ny,mlx,mly,mrx,mry\na.jpg,1,2,3,x,5,6,7,8,9,10\n")
    with pytest.raises(UserError, match="line 2"):
        read_landmarks_csv(tmp_path / "nan.csv")


@pytest.mark.parametrize("part", ["eyes", "nose", "mouth"])
def test_cut_out_part_blacks_only_its_box(part):
    image = np.full((64, 64, 3), 200, np.uint8)
    out = cut_out_part(image, POINTS, part)
    x0, y0, x1, y1 = (int(round(v)) for v in part_box(POINTS, part))
    assert (out[y0:y1, x0:x1] == 0).all()
    assert (out == 0).sum() == (y1 - y0) * (x1 - x0) * 3
    assert (image == 200).all()


def test_boxes_sit_where_the_parts_are():
    eyes, nose, mouth = (part_box(POINTS, p) for p in ("eyes", "nose", "mouth"))
    assert eyes[1] < 24 < eyes[3] and mouth[1] < 44 < mouth[3]
    assert eyes[3] <= nose[1] and nose[0] < 30 < nose[2]


def test_transform_in_compose_with_probability():
    image = np.full((64, 64, 3), 200, np.uint8)
    always = A.Compose([FacePartCutout(p=1.0), A.Resize(32, 32)], seed=0)
    out = always(image=image, face_landmarks=POINTS)["image"]
    assert out.shape == (32, 32, 3) and (out == 0).any()
    never = A.Compose([FacePartCutout(p=0.0)], seed=0)
    assert (never(image=image, face_landmarks=POINTS)["image"] == 200).all()
    assert (always(image=image, face_landmarks=None)["image"] == 200).all()


def test_transform_picks_among_given_parts_only():
    image = np.full((64, 64, 3), 200, np.uint8)
    mouth_only = A.Compose([FacePartCutout(parts=("mouth",), p=1.0)], seed=0)
    out = mouth_only(image=image, face_landmarks=POINTS)["image"]
    assert (out[44, 30] == 0).all() and (out[24, 20] == 200).all()
    with pytest.raises(UserError, match="subset"):
        FacePartCutout(parts=("ears",))
