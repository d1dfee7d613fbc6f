"""Face-part cutout: black out the eyes, nose or mouth box found from 5 facial landmarks.

Landmark CSV format (one row per image, header required, extra columns ignored)::

    path,lx,ly,rx,ry,nx,ny,mlx,mly,mrx,mry
    images/0001/0.jpg,23.8,24.5,37.8,25.6,30.2,32.8,27.1,40.6,32.1,41.0

``path`` is the image file, relative to the CSV's folder (or absolute); the other columns are pixel
coordinates (x right, y down) in that image of the left eye, right eye, nose tip, left and right
mouth corners ("left" = smaller x in the image). Coordinates are in the original image: apply the
cutout before any resize or geometric augmentation.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np

from pipeline.utils.errors import UserError, require_path
from pipeline.utils.files import text_stream

LANDMARK_COLUMNS = ("lx", "ly", "rx", "ry", "nx", "ny", "mlx", "mly", "mrx", "mry")
FACE_PARTS = ("eyes", "nose", "mouth")


def read_landmarks_csv(path: str | Path) -> dict[Path, np.ndarray]:
    """{resolved image path: 5x2 float array (left eye, right eye, nose, mouth left, mouth right)}."""
    path = require_path(path, "data.landmarks_csv", "landmarks CSV")
    with text_stream(path) as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in ("path", *LANDMARK_COLUMNS) if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path}: missing columns {missing}; expected path,{','.join(LANDMARK_COLUMNS)}")
        table = {}
        for line, row in enumerate(reader, start=2):
            try:
                points = np.array([float(row[c]) for c in LANDMARK_COLUMNS]).reshape(5, 2)
            except (TypeError, ValueError):
                raise UserError(f"{path}: line {line} has a non-numeric landmark coordinate") from None
            table[(path.parent / row["path"]).resolve()] = points
    return table


def part_box(landmarks: np.ndarray, part: str) -> tuple[float, float, float, float]:
    """Box ``(x0, y0, x1, y1)`` around one face part, sized by the distance d between the eyes.

    eyes: both eyes +-0.4 d horizontally, +-0.3 d vertically; nose: tip +-0.3 d horizontally, from
    0.3 d below the eye line to 0.15 d below the tip; mouth: corners +-0.25 d, +-0.3 d vertically.
    """
    left_eye, right_eye, nose, mouth_left, mouth_right = np.asarray(landmarks, dtype=float)
    d = float(np.linalg.norm(right_eye - left_eye))
    if part == "eyes":
        xs, y = (left_eye[0], right_eye[0]), (left_eye[1] + right_eye[1]) / 2
        return min(xs) - 0.4 * d, y - 0.3 * d, max(xs) + 0.4 * d, y + 0.3 * d
    if part == "nose":
        eye_line = (left_eye[1] + right_eye[1]) / 2
        return nose[0] - 0.3 * d, eye_line + 0.3 * d, nose[0] + 0.3 * d, nose[1] + 0.15 * d
    if part == "mouth":
        xs, y = (mouth_left[0], mouth_right[0]), (mouth_left[1] + mouth_right[1]) / 2
        return min(xs) - 0.25 * d, y - 0.3 * d, max(xs) + 0.25 * d, y + 0.3 * d
    raise UserError(f"face part '{part}' is unknown; use one of {FACE_PARTS}")


def cut_out_part(image: np.ndarray, landmarks: np.ndarray, part: str) -> np.ndarray:
    """Copy of ``image`` with the ``part`` box (clipped to the image) set to black."""
    x0, y0, x1, y1 = part_box(landmarks, part)
    height, width = image.shape[:2]
    x0, x1 = (int(np.clip(round(v), 0, width)) for v in (x0, x1))
    y0, y1 = (int(np.clip(round(v), 0, height)) for v in (y0, y1))
    out = image.copy()
    out[y0:y1, x0:x1] = 0
    return out


class FacePartCutout(A.ImageOnlyTransform):
    """With probability ``p``, black out one random part from ``parts`` (albumentations transform).

    Pass the landmarks as an extra target: ``transform(image=img, face_landmarks=points_5x2)``;
    without landmarks (``None``, e.g. no face found) the image is left unchanged. Put it first in a
    ``Compose``: the landmarks are in the input image's pixel coordinates.
    """

    def __init__(self, parts: tuple[str, ...] = FACE_PARTS, p: float = 0.5):
        super().__init__(p=p)
        unknown = sorted(set(parts) - set(FACE_PARTS))
        if unknown or not parts:
            raise UserError(f"FacePartCutout: parts {list(parts)} must be a non-empty subset of {FACE_PARTS}")
        self.parts = tuple(parts)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        return {"landmarks": data.get("face_landmarks"), "part": self.py_random.choice(self.parts)}

    def apply(self, img: np.ndarray, landmarks: np.ndarray | None = None, part: str = "eyes", **params) -> np.ndarray:
        return img if landmarks is None else cut_out_part(img, landmarks, part)
