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

import numpy as np

from pipeline.data.synthetic.faces import (
    MASK_COLOURS,
    Frame,
    background,
    paint_face,
    photometric,
    pick,
    random_look,
    write_image,
)

FACEMASK_CLASSES = ("with_mask", "without_mask", "mask_weared_incorrect")
MASK_STATES = ("worn", None, "incorrect")  # by class
DEFAULT_CLASS_PROBS = (0.68, 0.22, 0.10)
FILE_PREFIX = "maksssksksss"


def _face(image: np.ndarray, box: np.ndarray, state: int, rng: np.random.Generator) -> None:
    """A face filling ``box`` (x, y, w, h): the face ellipse in its lower part, the hair cap above, a mask by state."""
    x0, y0, w, h = box
    look = random_look(rng, hair_style=("short", "fringe")[rng.integers(2)], glasses=None, beard=False)
    frame = Frame(x0 + w / 2, y0 + 0.53 * h, 0.46 * w, 0.45 * h)
    paint_face(image, frame, look, rng, MASK_STATES[state], pick(rng, MASK_COLOURS, 10))


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
        image = background(rng, height, width, shapes=9)
        count = 0 if rng.random() < empty_fraction else int(rng.integers(1, max_faces + 1))
        objects = []
        for box in _place_faces(rng, height, width, count, face_size):
            state = int(rng.choice(len(FACEMASK_CLASSES), p=class_probs))
            _face(image, box, state, rng)
            voc_box, truncated = _voc_box(box, height, width)
            objects.append((FACEMASK_CLASSES[state], voc_box, truncated))
        filename = f"{FILE_PREFIX}{n}.png"
        write_image(root / "images" / filename, photometric(rng, image, gain=(0.9, 1.1), bias=10, blur=1.0))
        xml = _annotation_xml(filename, height, width, objects)
        ET.ElementTree(xml).write(root / "annotations" / f"{FILE_PREFIX}{n}.xml", encoding="unicode")
    return root
