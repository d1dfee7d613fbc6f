"""Synthetic face-verification set in the real on-disk format: cartoon faces per identity, plus fakes.

Each identity has a stable look (face shape, skin tone, eye distance and colour, hair style and
colour, nose, mouth, beard, glasses, a mole); each image varies it (pose, lighting, noise,
background). A fake image of an identity is drawn the same way and then carries one generation
artifact in the face region: a checkerboard upsampling grid, colour banding (stepped shading), a blending seam or a
high-frequency noise patch. Layout (see ``pipeline.data.formats.verification``)::

    images/<identity>/<n>.jpg     identity folders zero-padded for even ids ("0004"), others not
    meta.json                     keys zero-padded for ids divisible by 3, others not; 0 real, 1 fake
    landmarks.csv                 5-point landmarks per image (``pipeline.data.face_parts`` format)
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from pipeline.data.synthetic.faces import (
    FaceLook,
    Frame,
    background,
    face_region,
    paint_face,
    photometric,
    random_look,
    warp,
    write_image,
)
from pipeline.utils.files import write_csv, write_json

ARTIFACTS = ("grid", "banding", "seam", "noise_patch")
LANDMARK_COLUMNS = ("lx", "ly", "rx", "ry", "nx", "ny", "mlx", "mly", "mrx", "mry")


def _add_artifact(image: np.ndarray, mask: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    """Apply one generation artifact inside the face mask (image float RGB 0..255)."""
    size = image.shape[0]
    face = mask[..., None]
    if kind == "grid":
        period = int(rng.choice([2, 4]))
        yy, xx = np.mgrid[0:size, 0:size]
        pattern = np.where(((xx // (period // 2)) + (yy // (period // 2))) % 2 == 0, 1.0, -1.0)[..., None]
        return image + face * pattern * rng.uniform(14, 24)
    if kind == "banding":
        # Stepped shading in narrow stripes: visible bands on flat skin, a texture a small CNN can see.
        period = int(rng.integers(3, 6))
        yy, xx = np.mgrid[0:size, 0:size]
        angle = rng.uniform(0, np.pi)
        stripes = np.floor((xx * np.cos(angle) + yy * np.sin(angle)) * 2 / period) % 2
        return image + face * (stripes[..., None] - 0.5) * rng.uniform(40, 60) * rng.choice([-1, 1], 3)
    if kind == "seam":
        hard = (mask > 0.5).astype(np.float32)[..., None]
        tint = rng.uniform(20, 35, 3) * rng.choice([-1, 1], 3)
        edge = cv2.morphologyEx((mask > 0.5).astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        return image + hard * tint + edge[..., None] * rng.uniform(50, 80) * rng.choice([-1, 1])
    # Noise over a large part of the face (at least a third of the image side), well above the camera noise.
    ys, xs = np.nonzero(mask > 0.5)
    cy, cx = int(rng.choice(ys)), int(rng.choice(xs))
    half = max(2, size // 3)
    patch = np.zeros_like(mask)
    patch[max(0, cy - half) : cy + half, max(0, cx - half) : cx + half] = 1.0
    return image + (patch * mask)[..., None] * rng.normal(0, rng.uniform(35, 50), image.shape)


def render_face(look: FaceLook, size: int, rng: np.random.Generator, artifact: str | None = None,
                face_width: float = 0.28) -> tuple[np.ndarray, np.ndarray]:
    """One RGB uint8 image of ``look`` (face half-width ``face_width`` of the side) with per-image variation
    (and an artifact), and its 5 landmarks."""
    frame = Frame(size / 2, size / 2, face_width * size, face_width * size * look.aspect)
    image = background(rng, size, size)
    landmarks = paint_face(image, frame, look, rng)
    image, matrix = warp(rng, image, degrees=12, zoom=0.1, shift=0.06)
    landmarks = np.hstack([landmarks, np.ones((5, 1))]) @ matrix.T
    if artifact is not None:
        mask = cv2.warpAffine(face_region(size, size, frame), matrix, (size, size), flags=cv2.INTER_LINEAR)
        image = _add_artifact(image.astype(np.float32), mask, artifact, rng)
    return photometric(rng, image, gain=(0.85, 1.15), bias=0, noise=(1, 4), light=0.3), landmarks


def generate_verification(
    root: str | Path,
    num_identities: int = 40,
    images_per_identity: int = 8,
    fakes_per_identity: int = 3,
    image_size: int = 64,
    seed: int = 0,
) -> Path:
    """Write a synthetic verification set under ``root`` (images/, meta.json, landmarks.csv); return root.

    Identity ``i`` gets ``images_per_identity`` real images then ``fakes_per_identity`` fakes, named
    ``0.jpg, 1.jpg, ...`` (the very first image of identity 0 is ``0.JPG`` to exercise extension
    case). Same arguments give byte-identical files.
    """
    root = Path(root)
    images_dir = root / "images"
    meta: dict[str, int] = {}
    landmark_rows = []
    for identity in range(num_identities):
        identity_rng = np.random.default_rng([seed, identity])
        look, face_width = random_look(identity_rng), identity_rng.uniform(0.24, 0.31)
        folder = f"{identity:04d}" if identity % 2 == 0 else str(identity)
        key_identity = f"{identity:04d}" if identity % 3 == 0 else str(identity)
        (images_dir / folder).mkdir(parents=True, exist_ok=True)
        for n in range(images_per_identity + fakes_per_identity):
            rng = np.random.default_rng([seed, identity, n, 1])
            fake = n >= images_per_identity
            artifact = ARTIFACTS[rng.integers(len(ARTIFACTS))] if fake else None
            image, landmarks = render_face(look, image_size, rng, artifact, face_width)
            name = "0.JPG" if identity == 0 and n == 0 else f"{n}.jpg"
            write_image(images_dir / folder / name, image)
            meta[f"{key_identity}/{name}"] = int(fake)
            landmark_rows.append([f"images/{folder}/{name}", *np.round(landmarks, 2).ravel().tolist()])
    write_json(root / "meta.json", meta, indent=1)
    write_csv(root / "landmarks.csv", ["path", *LANDMARK_COLUMNS], landmark_rows)
    return root
