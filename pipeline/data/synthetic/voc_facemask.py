"""Synthetic face-mask scenes written in the Kaggle face-mask-detection layout (PNG + Pascal VOC XML).

Each scene holds 0-6 cartoon faces of varied size and skin tone on a varied background. A face wears
its mask correctly (covers nose and mouth), not at all, or incorrectly (below the nose), so the three
classes differ by what a detector must actually look at. Faces cut by the image border are written
with ``truncated=1`` and a box clipped to the image, as in the real annotations.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np

FACEMASK_CLASSES = ("with_mask", "without_mask", "mask_weared_incorrect")
DEFAULT_CLASS_PROBS = (0.68, 0.22, 0.10)
FILE_PREFIX = "maksssksksss"

SKIN_TONES = np.array(
    [(255, 224, 196), (241, 194, 155), (224, 172, 125), (198, 134, 90), (141, 85, 54), (94, 58, 40)]
)
MASK_COLOURS = np.array([(160, 205, 235), (240, 240, 240), (35, 35, 40), (120, 160, 220), (230, 170, 190)])


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A gradient with random blocks, stripes or blobs, so faces are not on a flat colour."""
    top, bottom = rng.integers(0, 256, size=(2, 3))
    ramp = np.linspace(0.0, 1.0, height)[:, None, None]
    image = (top * (1 - ramp) + bottom * ramp).repeat(width, axis=1)
    kind = rng.integers(3)
    for _ in range(int(rng.integers(3, 10))):
        colour = rng.integers(0, 256, size=3).tolist()
        x, y = int(rng.integers(width)), int(rng.integers(height))
        if kind == 0:
            w, h = rng.integers(width // 10, width // 2), rng.integers(height // 10, height // 2)
            cv2.rectangle(image, (x, y), (x + int(w), y + int(h)), colour, -1)
        elif kind == 1:
            cv2.line(image, (x, 0), (int(rng.integers(width)), height), colour, int(rng.integers(2, 12)))
        else:
            cv2.circle(image, (x, y), int(rng.integers(4, max(5, width // 8))), colour, -1)
    return image


def _ellipse(image: np.ndarray, centre, axes, colour) -> None:
    centre = tuple(int(round(v)) for v in centre)
    axes = tuple(max(1, int(round(v))) for v in axes)
    cv2.ellipse(image, centre, axes, 0, 0, 360, tuple(int(c) for c in colour), -1, cv2.LINE_AA)


def _mask(image: np.ndarray, box: np.ndarray, top: float, colour: np.ndarray) -> None:
    """A mask from ``top`` (fraction of face height) to the chin, with straps and pleats."""
    x0, y0, w, h = box
    colour = tuple(int(c) for c in colour)
    y_top, y_bottom = y0 + top * h, y0 + 0.97 * h
    points = np.array(
        [
            (x0 + 0.12 * w, y_top + 0.04 * h),
            (x0 + 0.5 * w, y_top - 0.02 * h),
            (x0 + 0.88 * w, y_top + 0.04 * h),
            (x0 + 0.84 * w, y_bottom - 0.12 * h),
            (x0 + 0.5 * w, y_bottom),
            (x0 + 0.16 * w, y_bottom - 0.12 * h),
        ]
    )
    cv2.fillPoly(image, [np.round(points).astype(np.int32)], colour, cv2.LINE_AA)
    strap = tuple(int(c * 0.7) for c in colour)
    thickness = max(1, int(w / 40))
    for side in (0.0, 1.0):
        start = (int(x0 + (0.12 + 0.76 * side) * w), int(y_top + 0.08 * h))
        cv2.line(image, start, (int(x0 + side * w), int(y0 + 0.45 * h)), strap, thickness, cv2.LINE_AA)
    for fraction in (0.35, 0.55):
        y = int(y_top + fraction * (y_bottom - y_top))
        cv2.line(image, (int(x0 + 0.2 * w), y), (int(x0 + 0.8 * w), y), strap, thickness, cv2.LINE_AA)


def _face(image: np.ndarray, box: np.ndarray, state: int, rng: np.random.Generator) -> None:
    """Draw a face filling ``box`` (x, y, w, h): hair, skin, eyes, nose, mouth, then the mask state."""
    x0, y0, w, h = box
    cx = x0 + w / 2
    skin = SKIN_TONES[rng.integers(len(SKIN_TONES))] + rng.integers(-12, 13, size=3)
    hair = rng.integers(10, 120, size=3)
    _ellipse(image, (cx, y0 + 0.32 * h), (0.52 * w, 0.34 * h), hair)
    _ellipse(image, (cx, y0 + 0.53 * h), (0.46 * w, 0.45 * h), np.clip(skin, 0, 255))
    eye_y = y0 + rng.uniform(0.36, 0.42) * h
    for side in (-1, 1):
        eye_x = cx + side * 0.2 * w
        _ellipse(image, (eye_x, eye_y), (0.09 * w, 0.05 * h), (250, 250, 250))
        _ellipse(image, (eye_x, eye_y), (0.045 * w, 0.045 * h), (30, 25, 20))
        brow = (int(eye_x - 0.1 * w), int(eye_y - 0.09 * h)), (int(eye_x + 0.1 * w), int(eye_y - 0.1 * h))
        cv2.line(image, *brow, tuple(int(c) for c in hair), max(1, int(w / 25)), cv2.LINE_AA)
    nose = np.array([(cx, y0 + 0.44 * h), (cx - 0.09 * w, y0 + 0.62 * h), (cx + 0.09 * w, y0 + 0.62 * h)])
    cv2.fillPoly(image, [np.round(nose).astype(np.int32)], tuple(int(c) for c in skin * 0.7), cv2.LINE_AA)
    for side in (-1, 1):
        _ellipse(image, (cx + side * 0.04 * w, y0 + 0.61 * h), (0.025 * w, 0.015 * h), (40, 20, 20))
    _ellipse(image, (cx, y0 + 0.76 * h), (0.16 * w, 0.05 * h), (170, 50, 60))
    colour = MASK_COLOURS[rng.integers(len(MASK_COLOURS))]
    if state == 0:
        _mask(image, box, rng.uniform(0.44, 0.5), colour)
    elif state == 2:
        _mask(image, box, rng.uniform(0.66, 0.71), colour)


def _place_faces(
    rng: np.random.Generator, height: int, width: int, count: int, face_size
) -> list[np.ndarray]:
    """Non-overlapping face boxes (x, y, w, h); about one in six crosses the image border."""
    boxes: list[np.ndarray] = []
    side = min(height, width)
    for _ in range(count * 30):
        if len(boxes) == count:
            break
        w = rng.uniform(*face_size) * side
        h = w * rng.uniform(1.15, 1.3)
        cut = rng.random() < 0.15
        slack_x, slack_y = (0.4 * w, 0.4 * h) if cut else (0.0, 0.0)
        x = rng.uniform(-slack_x, width - w + slack_x)
        y = rng.uniform(-slack_y, height - h + slack_y)
        candidate = np.array([x, y, w, h])
        if all(_apart(candidate, other) for other in boxes):
            boxes.append(candidate)
    return boxes


def _apart(a: np.ndarray, b: np.ndarray) -> bool:
    return a[0] + a[2] <= b[0] or b[0] + b[2] <= a[0] or a[1] + a[3] <= b[1] or b[1] + b[3] <= a[1]


def _voc_box(box: np.ndarray, height: int, width: int) -> tuple[tuple[int, int, int, int], bool]:
    """1-based inclusive VOC pixel box clipped to the image, and whether the face was cut."""
    x, y, w, h = box
    xmin, ymin = max(1, math.floor(x) + 1), max(1, math.floor(y) + 1)
    xmax, ymax = min(width, math.ceil(x + w)), min(height, math.ceil(y + h))
    truncated = x < 0 or y < 0 or x + w > width or y + h > height
    return (xmin, ymin, xmax, ymax), truncated


def _annotation_xml(
    filename: str, height: int, width: int, objects: list[tuple[str, tuple, bool]]
) -> ET.Element:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "images"
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for name, box, truncated in objects:
        node = ET.SubElement(root, "object")
        for tag, value in (("name", name), ("pose", "Unspecified"), ("truncated", int(truncated))):
            ET.SubElement(node, tag).text = str(value)
        ET.SubElement(node, "occluded").text = "0"
        ET.SubElement(node, "difficult").text = "0"
        bndbox = ET.SubElement(node, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True):
            ET.SubElement(bndbox, tag).text = str(value)
    ET.indent(root, space="    ")
    return root


def generate_voc_facemask(
    root: str | Path,
    num_images: int = 400,
    image_size: tuple[int, int] = (256, 256),
    seed: int = 0,
    class_probs: tuple[float, float, float] = DEFAULT_CLASS_PROBS,
    max_faces: int = 6,
    empty_fraction: float = 0.04,
    face_size: tuple[float, float] = (0.14, 0.34),
) -> Path:
    """Write ``root/images/maksssksksss<N>.png`` and ``root/annotations/maksssksksss<N>.xml``; returns root.

    ``face_size`` is the face width range as a fraction of the shorter image side; ``class_probs`` the
    chance of each of ``FACEMASK_CLASSES`` per face. Same arguments give byte-identical files.
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    height, width = image_size
    for n in range(num_images):
        image = _background(rng, height, width)
        count = 0 if rng.random() < empty_fraction else int(rng.integers(1, max_faces + 1))
        objects = []
        for box in _place_faces(rng, height, width, count, face_size):
            state = int(rng.choice(len(FACEMASK_CLASSES), p=class_probs))
            _face(image, box, state, rng)
            voc_box, truncated = _voc_box(box, height, width)
            objects.append((FACEMASK_CLASSES[state], voc_box, truncated))
        noise = rng.normal(0.0, rng.uniform(2, 8), size=image.shape)
        image = cv2.GaussianBlur(np.clip(image + noise, 0, 255).astype(np.uint8), (3, 3), 0)
        filename = f"{FILE_PREFIX}{n}.png"
        cv2.imwrite(str(root / "images" / filename), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        xml = _annotation_xml(filename, height, width, objects)
        ET.ElementTree(xml).write(root / "annotations" / f"{FILE_PREFIX}{n}.xml", encoding="unicode")
    return root
