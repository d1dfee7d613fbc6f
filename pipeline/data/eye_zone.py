"""Eye-zone preprocessing shared by training, testing, prediction, export checks and the service.

The glasses classifier sees only the eye zone: the top half of the face, padded to a square with
black and resized. Aligned face crops (MeGlass) are used as they are; for photos the largest face is
found first, by OpenCV's bundled Haar cascade unless a YuNet or other Haar model file is given. The output stays uint8 RGB so that albumentations can run after it; scaling to [0, 1]
and mean/std normalisation belong to the transform that follows (one place, used everywhere), never
to this class. Everything here is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from pipeline.utils.errors import UserError, require_path

Box = tuple[int, int, int, int]
FaceDetector = Callable[[np.ndarray], list[Box]]

HAAR_FACE_FILE = "haarcascade_frontalface_default.xml"


def default_haar_cascade() -> Path:
    """OpenCV's bundled frontal-face Haar cascade (``cv2.data.haarcascades``)."""
    return Path(cv2.data.haarcascades) / HAAR_FACE_FILE


class HaarFaceDetector:
    """Face boxes from an OpenCV Haar cascade (the default detector)."""

    def __init__(self, cascade_file: str | Path, min_face_size: int = 24):
        self.classifier = cv2.CascadeClassifier(str(cascade_file))
        if self.classifier.empty():
            raise UserError(f"face_model: '{cascade_file}' is not a readable Haar cascade XML file")
        self.min_face_size = min_face_size

    def __call__(self, rgb: np.ndarray) -> list[Box]:
        """All face boxes (x, y, w, h) found in an RGB image."""
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        size = (self.min_face_size, self.min_face_size)
        boxes = self.classifier.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=size)
        return [tuple(int(v) for v in box) for box in boxes]


class YuNetFaceDetector:
    """Face boxes from OpenCV's ``FaceDetectorYN`` with a YuNet ONNX model (opencv_zoo)."""

    def __init__(self, model_file: str | Path, score_threshold: float = 0.6, min_face_size: int = 24):
        self.model_file = str(model_file)
        self.score_threshold = score_threshold
        self.min_face_size = min_face_size
        try:
            self.detector = cv2.FaceDetectorYN.create(self.model_file, "", (320, 320), score_threshold)
        except cv2.error as exc:
            raise UserError(
                f"face_model: '{model_file}' is not a usable YuNet ONNX model ({exc.err})"
            ) from None

    def __call__(self, rgb: np.ndarray) -> list[Box]:
        """All face boxes (x, y, w, h) found in an RGB image."""
        height, width = rgb.shape[:2]
        self.detector.setInputSize((width, height))
        _, faces = self.detector.detect(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        if faces is None:
            return []
        boxes = [tuple(int(round(v)) for v in face[:4]) for face in faces]
        return [box for box in boxes if min(box[2], box[3]) >= self.min_face_size]


def build_face_detector(face_model: str | Path | None = None, min_face_size: int = 24) -> FaceDetector:
    """Detector for ``face_model``: a YuNet ``.onnx`` or a Haar ``.xml``; None means OpenCV's bundled Haar cascade."""
    if face_model is None:
        face_model = default_haar_cascade()
    path = require_path(face_model, "face_model", "face detector model")
    if path.suffix.lower() == ".onnx":
        return YuNetFaceDetector(path, min_face_size=min_face_size)
    return HaarFaceDetector(path, min_face_size=min_face_size)


def pad_to_square(image: np.ndarray) -> np.ndarray:
    """Pad an image to a square with black, keeping it centred."""
    height, width = image.shape[:2]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    return cv2.copyMakeBorder(
        image, top, side - height - top, left, side - width - left, cv2.BORDER_CONSTANT, value=(0, 0, 0)
    )


def expand_box(box: Box, margin: float, width: int, height: int) -> Box:
    """Grow a box by ``margin`` of its size on every side, clipped to the image."""
    x, y, w, h = box
    x0, y0 = max(0, int(round(x - margin * w))), max(0, int(round(y - margin * h)))
    x1, y1 = min(width, int(round(x + w + margin * w))), min(height, int(round(y + h + margin * h)))
    return x0, y0, x1 - x0, y1 - y0


class EyeZonePreprocessor:
    """Face image -> eye zone (top half of the face, black-padded square, ``size`` x ``size``) as uint8 RGB.

    ``detect_face=False`` (default) treats the whole input as an aligned face crop (MeGlass).
    ``detect_face=True`` crops the largest face found by ``face_detector`` (or one built from
    ``face_model``, by default OpenCV's Haar cascade, see ``build_face_detector``), grown by ``margin`` on each side, and returns None
    when there is no face; callers answer "no_face". Normalisation is deliberately not done here.
    """

    def __init__(
        self,
        size: int = 82,
        detect_face: bool = False,
        margin: float = 0.1,
        face_model: str | Path | None = None,
        min_face_size: int = 24,
        face_detector: FaceDetector | None = None,
    ):
        self.size = size
        self.detect_face = detect_face
        self.margin = margin
        self.face_model = face_model
        self.min_face_size = min_face_size
        self._owns_detector = detect_face and face_detector is None
        self._detector = (
            build_face_detector(face_model, min_face_size) if self._owns_detector else face_detector
        )

    def __getstate__(self) -> dict:
        # OpenCV detectors cannot be pickled (DataLoader workers, spawn); rebuilt on unpickling.
        state = dict(self.__dict__)
        if self._owns_detector:
            state["_detector"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if self._owns_detector:
            self._detector = build_face_detector(self.face_model, self.min_face_size)

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        """Eye zone of the (largest) face in an RGB uint8 HxWx3 image, or None when no face is found."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 HxWx3 image, got {rgb.dtype} {rgb.shape}")
        face = rgb
        if self.detect_face:
            face = self.largest_face(rgb)
            if face is None:
                return None
        return self.eye_zone(face)

    def largest_face(self, rgb: np.ndarray) -> np.ndarray | None:
        """Crop of the largest detected face (with margin), or None."""
        boxes = [box for box in self._detector(rgb) if box[2] > 0 and box[3] > 0]
        if not boxes:
            return None
        height, width = rgb.shape[:2]
        x, y, w, h = expand_box(max(boxes, key=lambda b: b[2] * b[3]), self.margin, width, height)
        if w < 2 or h < 2:
            return None
        return rgb[y : y + h, x : x + w]

    def eye_zone(self, face: np.ndarray) -> np.ndarray:
        """Top half of an aligned face crop, black-padded to a square and resized to ``size``."""
        top_half = pad_to_square(face[: max(1, face.shape[0] // 2)])
        # INTER_AREA avoids aliasing when shrinking; it falls back to bilinear-like when enlarging.
        return cv2.resize(top_half, (self.size, self.size), interpolation=cv2.INTER_AREA)
