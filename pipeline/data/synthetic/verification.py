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

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

ARTIFACTS = ("grid", "banding", "seam", "noise_patch")
HAIR_STYLES = ("bald", "short", "long", "fringe")
LANDMARK_COLUMNS = ("lx", "ly", "rx", "ry", "nx", "ny", "mlx", "mly", "mrx", "mry")


@dataclass(frozen=True)
class FaceLook:
    """The stable appearance of one identity, in units of the image side."""

    skin: tuple[int, int, int]
    face_w: float
    face_h: float
    eye_dist: float
    eye_y: float
    eye_size: float
    iris: tuple[int, int, int]
    brow_tilt: float
    nose_len: float
    mouth_w: float
    mouth_y: float
    lips: tuple[int, int, int]
    hair: tuple[int, int, int]
    hair_style: str
    beard: bool
    glasses: bool
    mole: tuple[float, float] | None


def _colour(rng: np.random.Generator, low: int = 0, high: int = 256) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(low, high, size=3))


def random_look(rng: np.random.Generator) -> FaceLook:
    """Draw an identity's appearance."""
    tone = rng.uniform()
    skin = np.array([250, 220, 190]) * (1 - tone) + np.array([95, 60, 40]) * tone + rng.normal(0, 8, 3)
    return FaceLook(
        skin=tuple(int(c) for c in np.clip(skin, 0, 255)),
        face_w=rng.uniform(0.24, 0.34),
        face_h=rng.uniform(0.32, 0.42),
        eye_dist=rng.uniform(0.16, 0.28),
        eye_y=rng.uniform(-0.12, -0.04),
        eye_size=rng.uniform(0.03, 0.055),
        iris=_colour(rng, 0, 200),
        brow_tilt=rng.uniform(-0.03, 0.03),
        nose_len=rng.uniform(0.06, 0.14),
        mouth_w=rng.uniform(0.08, 0.18),
        mouth_y=rng.uniform(0.14, 0.22),
        lips=_colour(rng, 80, 240),
        hair=_colour(rng, 0, 230),
        hair_style=HAIR_STYLES[rng.integers(len(HAIR_STYLES))],
        beard=bool(rng.uniform() < 0.3),
        glasses=bool(rng.uniform() < 0.3),
        mole=(rng.uniform(-0.18, 0.18), rng.uniform(-0.05, 0.25)) if rng.uniform() < 0.5 else None,
    )


def _draw_face(look: FaceLook, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Face layer (RGB float), its mask (float 0..1) and its 5 landmarks (5x2), centred, before pose."""
    scale = 4  # draw 4x larger and downsample: smooth edges without antialiasing each primitive
    big = size * scale
    layer = np.zeros((big, big, 3), np.uint8)
    mask = np.zeros((big, big), np.uint8)
    c = big / 2

    def pt(x: float, y: float) -> tuple[int, int]:
        return int(round(c + x * big)), int(round(c + y * big))

    def ln(v: float) -> int:
        return max(1, int(round(v * big)))

    _draw_head(layer, mask, look, pt, ln)
    if look.beard:
        cv2.ellipse(layer, pt(0, look.mouth_y), (ln(look.face_w * 0.8), ln(look.face_h - look.mouth_y + 0.02)), 0, 0, 180, look.hair, -1)
    half = look.eye_dist / 2
    eyes = [(-half, look.eye_y), (half, look.eye_y)]
    gaze = rng.normal(0, look.eye_size * 0.15, 2)
    for sign, (ex, ey) in zip((-1, 1), eyes, strict=True):
        cv2.ellipse(layer, pt(ex, ey), (ln(look.eye_size * 1.5), ln(look.eye_size)), 0, 0, 360, (245, 245, 245), -1)
        cv2.circle(layer, pt(ex + gaze[0], ey + gaze[1]), ln(look.eye_size * 0.7), look.iris, -1)
        cv2.circle(layer, pt(ex + gaze[0], ey + gaze[1]), ln(look.eye_size * 0.3), (10, 10, 10), -1)
        brow_y = ey - look.eye_size * 2
        cv2.line(layer, pt(ex - look.eye_size * 1.5, brow_y + sign * look.brow_tilt), pt(ex + look.eye_size * 1.5, brow_y - sign * look.brow_tilt), look.hair, ln(0.012))
        if look.glasses:
            cv2.circle(layer, pt(ex, ey), ln(look.eye_size * 2.2), (20, 20, 20), ln(0.01))
    if look.glasses:
        cv2.line(layer, pt(-half + look.eye_size * 2.2, look.eye_y), pt(half - look.eye_size * 2.2, look.eye_y), (20, 20, 20), ln(0.01))
    nose_tip = (0.0, look.eye_y + look.nose_len)
    shade = tuple(int(v * 0.75) for v in look.skin)
    cv2.line(layer, pt(0, look.eye_y + 0.02), pt(*nose_tip), shade, ln(0.015))
    cv2.ellipse(layer, pt(*nose_tip), (ln(0.03), ln(0.015)), 0, 0, 180, shade, ln(0.012))
    smile = rng.uniform(0.0, 0.04)
    mouth_l, mouth_r = (-look.mouth_w / 2, look.mouth_y), (look.mouth_w / 2, look.mouth_y)
    cv2.ellipse(layer, pt(0, look.mouth_y), (ln(look.mouth_w / 2), ln(0.012 + smile)), 0, 0, 180, look.lips, -1)
    cv2.line(layer, pt(*mouth_l), pt(*mouth_r), look.lips, ln(0.015))
    if look.mole is not None:
        cv2.circle(layer, pt(*look.mole), ln(0.012), (60, 35, 25), -1)
    layer = cv2.resize(layer, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    mask = cv2.resize(mask, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    landmarks = (np.array([*eyes, nose_tip, mouth_l, mouth_r]) + 0.5) * size
    return layer, mask, landmarks


def _draw_head(layer: np.ndarray, mask: np.ndarray, look: FaceLook, pt, ln) -> None:
    """Skin and hair of the face layer and its mask (``pt``, ``ln``: face units -> drawing pixels)."""
    axes = (ln(look.face_w), ln(look.face_h))
    if look.hair_style == "long":
        cv2.ellipse(layer, pt(0, 0.02), (ln(look.face_w + 0.06), ln(look.face_h + 0.04)), 0, 180, 360, look.hair, -1)
        cv2.rectangle(layer, pt(-look.face_w - 0.06, 0.02), pt(look.face_w + 0.06, 0.3), look.hair, -1)
        cv2.ellipse(mask, pt(0, 0.02), (ln(look.face_w + 0.06), ln(look.face_h + 0.04)), 0, 180, 360, 255, -1)
        cv2.rectangle(mask, pt(-look.face_w - 0.06, 0.02), pt(look.face_w + 0.06, 0.3), 255, -1)
    cv2.ellipse(layer, pt(0, 0), axes, 0, 0, 360, look.skin, -1)
    cv2.ellipse(mask, pt(0, 0), axes, 0, 0, 360, 255, -1)
    if look.hair_style in ("short", "long", "fringe"):
        cv2.ellipse(layer, pt(0, -0.02), (ln(look.face_w + 0.02), ln(look.face_h + 0.02)), 0, 180, 360, look.hair, -1)
        cv2.ellipse(mask, pt(0, -0.02), (ln(look.face_w + 0.02), ln(look.face_h + 0.02)), 0, 180, 360, 255, -1)
        cv2.ellipse(layer, pt(0, -0.02), (ln(look.face_w - 0.02), ln(look.face_h * 0.6)), 0, 180, 360, look.skin, -1)
    if look.hair_style == "fringe":
        cv2.rectangle(layer, pt(-look.face_w * 0.8, -look.face_h * 0.75), pt(look.face_w * 0.8, -look.face_h * 0.5), look.hair, -1)


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random two-colour gradient."""
    a, b = np.array(_colour(rng), np.float32), np.array(_colour(rng), np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    t = np.clip(0.5 + (xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle), 0, 1)[..., None]
    return a * (1 - t) + b * t


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


def render_face(look: FaceLook, size: int, rng: np.random.Generator, artifact: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One RGB uint8 image of ``look`` with per-image variation (and an artifact), and its 5 landmarks."""
    layer, mask, landmarks = _draw_face(look, size, rng)
    angle = rng.uniform(-12, 12)
    zoom = rng.uniform(0.9, 1.1)
    shift = rng.uniform(-0.06, 0.06, 2) * size
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), angle, zoom)
    matrix[:, 2] += shift
    layer = cv2.warpAffine(layer, matrix, (size, size), flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(mask, matrix, (size, size), flags=cv2.INTER_LINEAR)
    landmarks = np.hstack([landmarks, np.ones((5, 1))]) @ matrix.T
    image = _background(size, rng) * (1 - mask[..., None]) + layer * mask[..., None]
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    direction = rng.uniform(0, 2 * np.pi)
    light = rng.uniform(0.85, 1.15) * (1 + rng.uniform(0, 0.3) * (xx * np.cos(direction) + yy * np.sin(direction)))
    image = image * light[..., None]
    if artifact is not None:
        image = _add_artifact(image, mask, artifact, rng)
    image = image + rng.normal(0, rng.uniform(1, 4), image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), landmarks


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
        look = random_look(np.random.default_rng([seed, identity]))
        folder = f"{identity:04d}" if identity % 2 == 0 else str(identity)
        key_identity = f"{identity:04d}" if identity % 3 == 0 else str(identity)
        (images_dir / folder).mkdir(parents=True, exist_ok=True)
        for n in range(images_per_identity + fakes_per_identity):
            rng = np.random.default_rng([seed, identity, n, 1])
            fake = n >= images_per_identity
            artifact = ARTIFACTS[rng.integers(len(ARTIFACTS))] if fake else None
            image, landmarks = render_face(look, image_size, rng, artifact)
            name = "0.JPG" if identity == 0 and n == 0 else f"{n}.jpg"
            _, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            (images_dir / folder / name).write_bytes(data.tobytes())
            meta[f"{key_identity}/{name}"] = int(fake)
            landmark_rows.append([f"images/{folder}/{name}", *np.round(landmarks, 2).ravel().tolist()])
    (root / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    with (root / "landmarks.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", *LANDMARK_COLUMNS])
        writer.writerows(landmark_rows)
    return root
