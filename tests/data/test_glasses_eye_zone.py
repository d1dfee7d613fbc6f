"""Eye-zone preprocessing: top half, black padding, size, face detection and the no-face answer."""

import pickle
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.data.eye_zone import (
    EyeZonePreprocessor,
    HaarFaceDetector,
    build_face_detector,
    default_haar_cascade,
)
from pipeline.utils.errors import UserError


def test_output_is_uint8_square_of_requested_size():
    for shape in [(120, 120, 3), (140, 100, 3), (37, 90, 3)]:
        zone = EyeZonePreprocessor(size=82)(np.full(shape, 128, np.uint8))
        assert zone.shape == (82, 82, 3)
        assert zone.dtype == np.uint8


def test_only_the_top_half_is_used():
    face = np.zeros((120, 120, 3), np.uint8)
    face[70:90, 40:80] = 255  # a marker in the bottom half
    assert EyeZonePreprocessor()(face).max() == 0
    face[20:40, 40:80] = 255  # the same marker in the top half
    assert EyeZonePreprocessor()(face).max() == 255


def test_top_half_is_padded_with_black_and_centred():
    zone = EyeZonePreprocessor(size=80)(np.full((120, 120, 3), 200, np.uint8))
    # 120x60 top half padded to 120x120: 30 black rows above and below, i.e. 20 of 80 output rows.
    assert zone[:19].max() == 0 and zone[-19:].max() == 0
    assert zone[21:59].min() == 200
    assert zone[21:59, :3].min() == 200  # no padding on the sides


def test_deterministic_and_input_untouched():
    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (120, 120, 3), dtype=np.uint8)
    copy = face.copy()
    pre = EyeZonePreprocessor()
    np.testing.assert_array_equal(pre(face), pre(face))
    np.testing.assert_array_equal(face, copy)


def test_rejects_non_rgb_uint8():
    with pytest.raises(ValueError, match="RGB uint8"):
        EyeZonePreprocessor()(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        EyeZonePreprocessor()(np.zeros((10, 10, 3), np.float32))


def test_injected_detector_largest_face_and_no_face():
    photo = np.zeros((200, 300, 3), np.uint8)
    photo[50:150, 100:200] = 90
    photo[50:100, 100:200] = 255  # the big face's top half is white
    boxes = []
    pre = EyeZonePreprocessor(size=64, detect_face=True, margin=0.0, face_detector=lambda image: boxes)
    assert pre(photo) is None
    boxes.extend([(0, 0, 20, 20), (100, 50, 100, 100)])
    zone = pre(photo)
    np.testing.assert_array_equal(zone, EyeZonePreprocessor(size=64)(photo[50:150, 100:200]))
    assert zone[16:48].min() == 255


class _SquareFaceNet(torch.nn.Module):
    """A stand-in for YuNet: every bright 32x32 cell (stride 32) is a face of that cell's size."""

    def forward(self, x):
        outputs = []
        for kind in ("cls", "obj", "bbox", "kps"):
            for stride in (8, 16, 32):
                cells = F.avg_pool2d(x.mean(1, keepdim=True) / 255, stride, stride).flatten(2).transpose(1, 2)
                if kind in ("cls", "obj"):
                    outputs.append(cells if stride == 32 else cells * 0)
                elif kind == "bbox":
                    outputs.append(torch.cat([cells * 0 + 0.5, cells * 0 + 0.5, cells * 0, cells * 0], -1))
                else:
                    outputs.append(cells.repeat(1, 1, 10) * 0)
        return tuple(outputs)


@pytest.fixture(scope="module")
def square_face_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("yunet") / "square_faces.onnx"
    names = [f"{kind}_{stride}" for kind in ("cls", "obj", "bbox", "kps") for stride in (8, 16, 32)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _SquareFaceNet(),
            torch.zeros(1, 3, 64, 64),
            str(path),
            input_names=["input"],
            output_names=names,
            dynamic_axes={"input": {2: "h", 3: "w"}},
            dynamo=False,
        )
    return path


def test_yunet_detector_blank_image_is_no_face(square_face_model):
    pre = EyeZonePreprocessor(detect_face=True, face_model=square_face_model, margin=0.0, min_face_size=16)
    assert pre(np.zeros((150, 200, 3), np.uint8)) is None


def test_yunet_detector_finds_and_crops_the_face(square_face_model):
    photo = np.zeros((150, 200, 3), np.uint8)
    photo[64:96, 96:128] = 255
    pre = EyeZonePreprocessor(
        size=32, detect_face=True, face_model=square_face_model, margin=0.0, min_face_size=16
    )
    zone = pre(photo)
    # The face is the white 32x32 cell: its top half, padded to a square, is white in the middle rows only.
    assert zone[8:24].min() == 255
    assert zone[:7].max() == 0 and zone[-7:].max() == 0
    restored = pickle.loads(pickle.dumps(pre))
    np.testing.assert_array_equal(restored(photo), zone)


def test_face_model_errors(tmp_path):
    with pytest.raises(UserError, match="face_model"):
        build_face_detector(tmp_path / "missing.onnx")
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    with pytest.raises(UserError, match="not a usable YuNet"):
        build_face_detector(tmp_path / "broken.onnx")


def test_haar_cascade_is_the_default_detector():
    pre = EyeZonePreprocessor(detect_face=True)
    assert isinstance(pre._detector, HaarFaceDetector)
    assert default_haar_cascade().is_file()


def test_haar_blank_image_is_no_face():
    assert EyeZonePreprocessor(detect_face=True)(np.zeros((240, 320, 3), np.uint8)) is None


def test_haar_default_survives_pickling():
    photo = np.zeros((240, 320, 3), np.uint8)
    restored = pickle.loads(pickle.dumps(EyeZonePreprocessor(detect_face=True)))
    assert isinstance(restored._detector, HaarFaceDetector) and restored(photo) is None
