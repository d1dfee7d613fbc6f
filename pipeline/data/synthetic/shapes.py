"""Synthetic shapes: black images with one white filled circle or square (the siamese task)."""

from __future__ import annotations

import cv2
import numpy as np

CIRCLE, SQUARE = 0, 1
SHAPE_NAMES = ("circle", "square")


def draw_shape(rng: np.random.Generator, shape: int, image_size: int = 32, rotate: bool = False) -> np.ndarray:
    """One ``image_size`` square RGB uint8 image holding a white ``shape`` centred near the middle.

    Circles have radius 4..14 and squares half-side 2..14 (scaled with the image size). With
    ``rotate``, squares are turned by a random angle and kept at half-side >= 6, because a small
    rotated square rasterises to something indistinguishable from a circle.
    """
    scale = image_size / 32
    image = np.zeros((image_size, image_size), dtype=np.uint8)
    cx, cy = (image_size / 2 + rng.uniform(-2, 2, size=2) * scale).tolist()
    if shape == CIRCLE:
        radius = rng.uniform(4, 14) * scale
        cv2.circle(image, (round(cx * 16), round(cy * 16)), round(radius * 16), 255, -1, cv2.LINE_AA, shift=4)
    else:
        half = rng.uniform(6 if rotate else 2, 14) * scale
        angle = rng.uniform(0, 90) if rotate else 0.0
        corners = cv2.boxPoints(((cx, cy), (2 * half, 2 * half), angle))
        cv2.fillPoly(image, [np.round(corners * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return np.repeat(image[:, :, None], 3, axis=2)


def sample_pair(rng: np.random.Generator, image_size: int = 32, rotate: bool = False) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Two images and their shape ids; matching and non-matching pairs are equally likely."""
    shape1 = int(rng.integers(2))
    shape2 = shape1 if rng.random() < 0.5 else 1 - shape1
    return draw_shape(rng, shape1, image_size, rotate), draw_shape(rng, shape2, image_size, rotate), shape1, shape2
