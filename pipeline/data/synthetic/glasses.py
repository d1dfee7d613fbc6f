"""Synthetic MeGlass-format data: drawn aligned faces with, without and with misplaced glasses.

``generate_meglass(root)`` writes ``root/images/*.jpg`` (aligned faces, eyes at about 40% of the
height like MeGlass' 120x120 crops) and ``root/meta.txt`` with ``images/<name>.jpg <0|1>`` lines.
Label 1 means glasses on the eyes; label 0 covers bare faces and "funny" glasses worn elsewhere
(pushed up on the forehead, on the mouth, hanging below the chin). Each identity (face shape, skin,
hair) appears in several images, named ``id<identity>_<index>.jpg``. With ``num_photos > 0`` it also
writes unaligned ``root/photos/*.jpg`` (a smaller face somewhere in a larger scene, some with no
face at all) and ``root/photos/faces.json`` with each photo's label and face box, or null.
Everything is a deterministic function of ``seed``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

LIST_FILE = "meta.txt"
LENS_SHAPES = ("round", "oval", "rect", "aviator")
MISPLACEMENTS = ("forehead", "mouth", "chin")
SKIN_TONES = ((255, 224, 196), (241, 194, 167), (224, 172, 138), (198, 134, 98), (141, 85, 54), (92, 58, 38))
HAIR_COLOURS = ((30, 25, 20), (70, 45, 25), (120, 80, 40), (200, 170, 110), (150, 150, 150), (160, 60, 30))
FRAME_COLOURS = ((15, 15, 15), (90, 55, 30), (200, 170, 60), (180, 180, 190), (170, 30, 30), (30, 60, 160))
REFERENCE_SIZE = 120  # geometry below is in a 120x120 frame, scaled to ``image_size``


@dataclass(frozen=True)
class Identity:
    """What stays the same across one person's images."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    face_axes: tuple[float, float]
    eye_gap: float
    hair_line: float
    bald: bool


@dataclass(frozen=True)
class Glasses:
    """One pair of glasses: lens shape and size, frame, tint and where it sits."""

    shape: str
    half_width: float
    half_height: float
    thickness: int
    colour: tuple[int, int, int]
    sunglasses: bool
    tint_alpha: float


def _colour(rng: np.random.Generator, palette: tuple, jitter: int = 15) -> tuple[int, int, int]:
    """A palette colour with a little per-channel jitter."""
    base = np.array(palette[rng.integers(len(palette))], dtype=int)
    return tuple(int(c) for c in np.clip(base + rng.integers(-jitter, jitter + 1, 3), 0, 255))


def _random_identity(rng: np.random.Generator) -> Identity:
    """Face shape, skin and hair for one synthetic person."""
    return Identity(
        skin=_colour(rng, SKIN_TONES),
        hair=_colour(rng, HAIR_COLOURS),
        face_axes=(float(rng.uniform(35, 43)), float(rng.uniform(45, 53))),
        eye_gap=float(rng.uniform(16, 20)),
        hair_line=float(rng.uniform(18, 30)),
        bald=bool(rng.random() < 0.1),
    )


def _random_glasses(rng: np.random.Generator, eye_gap: float) -> Glasses:
    """Glasses sized to fit the eyes of a face with the given eye gap."""
    sunglasses = bool(rng.random() < 0.3)
    return Glasses(
        shape=LENS_SHAPES[rng.integers(len(LENS_SHAPES))],
        half_width=float(rng.uniform(0.55, 0.85) * eye_gap),
        half_height=float(rng.uniform(5.5, 10)),
        thickness=int(rng.integers(1, 5)),
        colour=_colour(rng, FRAME_COLOURS, jitter=25),
        sunglasses=sunglasses,
        tint_alpha=float(rng.uniform(0.75, 0.95) if sunglasses else rng.uniform(0.0, 0.2)),
    )


def _lens_outline(glasses: Glasses, centre: tuple[float, float], mirror: bool) -> np.ndarray:
    """Closed lens outline (N x 2 points, 120-frame coordinates) around ``centre``."""
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    x, y = np.cos(t), np.sin(t)
    if glasses.shape == "rect":
        x, y = np.sign(x) * np.abs(x) ** 0.35, np.sign(y) * np.abs(y) ** 0.35
    elif glasses.shape == "aviator":
        # Teardrop: the lower half bulges down and towards the nose.
        lower = np.clip(y, 0, None)
        y = y * (1 + 0.45 * lower)
        x = x - 0.25 * lower * (1 if mirror else -1)
    elif glasses.shape == "round":
        x = x * glasses.half_height / glasses.half_width
    return np.stack([centre[0] + glasses.half_width * x, centre[1] + glasses.half_height * y], axis=1)


def _fixed_point(values, scale: float) -> np.ndarray:
    """120-frame coordinates to OpenCV's 4-bit fixed point (``shift=4``) at the output size."""
    return np.round(np.asarray(values, dtype=float) * scale * 16).astype(np.int32)


def _draw_glasses(
    canvas: np.ndarray,
    glasses: Glasses,
    centre: tuple[float, float],
    gap: float,
    face_rx: float,
    scale: float,
) -> None:
    """Draw lenses, bridge and temple arms centred on ``centre`` (midpoint between the lenses)."""
    cx, cy = centre
    outlines = [_lens_outline(glasses, (cx + side * gap, cy), mirror=side > 0) for side in (-1, 1)]
    polygons = [_fixed_point(outline, scale) for outline in outlines]
    thickness = max(1, int(round(glasses.thickness * scale)))
    if glasses.tint_alpha > 0:
        tint = canvas.copy()
        lens_colour = tuple(int(c * 0.3) for c in glasses.colour) if glasses.sunglasses else (200, 220, 235)
        cv2.fillPoly(tint, polygons, lens_colour, cv2.LINE_AA, shift=4)
        cv2.addWeighted(tint, glasses.tint_alpha, canvas, 1 - glasses.tint_alpha, 0, dst=canvas)
    cv2.polylines(canvas, polygons, True, glasses.colour, thickness, cv2.LINE_AA, shift=4)
    inner = [outlines[0][:, 0].max(), outlines[1][:, 0].min()]
    outer = [outlines[0][:, 0].min(), outlines[1][:, 0].max()]
    top = cy - 0.4 * glasses.half_height
    lines = [((inner[0], top), (inner[1], top))]
    temples = zip(outer, (-1, 1), strict=True)
    lines += [((x, cy - 0.5 * glasses.half_height), (cx + side * face_rx, cy - 2)) for x, side in temples]
    for start, end in lines:
        p0, p1 = (tuple(_fixed_point(p, scale).tolist()) for p in (start, end))
        cv2.line(canvas, p0, p1, glasses.colour, thickness, cv2.LINE_AA, shift=4)


def _ellipse(canvas, centre, axes, colour, scale, thickness=-1, arc=(0, 360)) -> None:
    """cv2.ellipse in 120-frame float coordinates."""
    c = tuple(_fixed_point(centre, scale).tolist())
    a = tuple(np.maximum(1, _fixed_point(axes, scale)).tolist())
    width = thickness if thickness < 0 else max(1, int(round(thickness * scale)))
    cv2.ellipse(canvas, c, a, 0, arc[0], arc[1], colour, width, cv2.LINE_AA, shift=4)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Vertical colour gradient with a few blurred blocks: a plain, varied backdrop."""
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, height)[:, None, None]
    image = (top * (1 - ramp) + bottom * ramp).repeat(width, axis=1)
    for _ in range(rng.integers(0, 4)):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        x1, y1 = x0 + rng.integers(width // 8, width // 2), y0 + rng.integers(height // 8, height // 2)
        cv2.rectangle(image, (int(x0), int(y0)), (int(x1), int(y1)), rng.integers(0, 256, 3).tolist(), -1)
    return cv2.GaussianBlur(image.astype(np.uint8), (0, 0), 2)


def _draw_eye(canvas, centre, skin, scale, rng) -> None:
    """Eye white, iris, pupil and upper lid."""
    _ellipse(canvas, centre, (6, 3.2), (245, 245, 240), scale)
    iris = tuple(int(c) for c in rng.integers(30, 140, 3))
    _ellipse(canvas, centre, (2.8, 2.8), iris, scale)
    _ellipse(canvas, centre, (1.2, 1.2), (10, 10, 10), scale)
    _ellipse(canvas, centre, (6, 3.2), tuple(int(c * 0.5) for c in skin), scale, thickness=1, arc=(180, 360))


def draw_face(
    rng: np.random.Generator, identity: Identity, size: int, glasses: Glasses | None, placement: str
) -> np.ndarray:
    """An aligned RGB face of ``size`` x ``size``; glasses (if any) at ``placement`` ("eyes", "forehead", ...)."""
    scale = size / REFERENCE_SIZE
    canvas = _background(rng, size, size)
    rx, ry = identity.face_axes
    cx, cy = 60.0, 64.0
    eye_y = 46.0 + rng.uniform(-1.5, 1.5)
    if not identity.bald:
        _ellipse(canvas, (cx, cy - 8), (rx + 7, ry + 4), identity.hair, scale)
    _ellipse(canvas, (cx, 122), (rx + 28, 22), _colour(rng, FRAME_COLOURS, 60), scale)
    _ellipse(canvas, (cx, cy + ry - 4), (rx * 0.45, 16), identity.skin, scale)
    for side in (-1, 1):
        _ellipse(canvas, (cx + side * (rx - 1), eye_y + 6), (5, 9), identity.skin, scale)
    _ellipse(canvas, (cx, cy), (rx, ry), identity.skin, scale)
    if not identity.bald:
        _ellipse(canvas, (cx, cy - ry + identity.hair_line / 2), (rx + 2, identity.hair_line), identity.hair, scale,
                 arc=(180, 360))
    shade = tuple(int(c * 0.55) for c in identity.skin)
    for side in (-1, 1):
        eye = (cx + side * identity.eye_gap, eye_y)
        _draw_eye(canvas, eye, identity.skin, scale, rng)
        brow = (eye[0], eye_y - 8 + rng.uniform(-1, 1))
        _ellipse(canvas, brow, (7, 2.5), identity.hair if not identity.bald else shade, scale, thickness=2, arc=(200, 340))
    _ellipse(canvas, (cx, eye_y + 20), (4, 2.5), shade, scale, thickness=1, arc=(0, 180))
    lips = (int(identity.skin[0] * 0.8), int(identity.skin[1] * 0.45), int(identity.skin[2] * 0.45))
    _ellipse(canvas, (cx, eye_y + 35), (rng.uniform(8, 12), rng.uniform(2, 4.5)), lips, scale)
    if glasses is not None:
        centre_y = {
            "eyes": eye_y + rng.uniform(-1.5, 2),
            "forehead": eye_y - rng.uniform(22, 30),
            "mouth": eye_y + 35,
            "chin": eye_y + rng.uniform(55, 62),
        }[placement]
        _draw_glasses(canvas, glasses, (cx + rng.uniform(-1.5, 1.5), centre_y), identity.eye_gap, rx, scale)
    return _jitter(rng, canvas)


def _jitter(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Slight pose (rotation, scale, shift), lighting, blur and noise."""
    size = image.shape[0]
    matrix = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(-7, 7), rng.uniform(0.94, 1.06))
    matrix[:, 2] += rng.uniform(-0.03, 0.03, 2) * size
    image = cv2.warpAffine(
        image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.2))
    gain, offset = rng.uniform(0.75, 1.2), rng.uniform(-25, 25)
    noisy = image * gain + offset + rng.normal(0, rng.uniform(1, 6), image.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _sample_face(
    rng: np.random.Generator, identity: Identity, size: int, glasses_fraction: float, funny_fraction: float
) -> tuple[np.ndarray, int]:
    """One face image and its label (1 only for glasses on the eyes)."""
    draw = rng.random()
    if draw < glasses_fraction:
        return draw_face(rng, identity, size, _random_glasses(rng, identity.eye_gap), "eyes"), 1
    if draw < glasses_fraction + funny_fraction:
        placement = MISPLACEMENTS[rng.integers(len(MISPLACEMENTS))]
        return draw_face(rng, identity, size, _random_glasses(rng, identity.eye_gap), placement), 0
    return draw_face(rng, identity, size, None, "eyes"), 0


def _write_jpeg(path: Path, rgb: np.ndarray) -> None:
    """Save an RGB image as JPEG."""
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])


def _write_photos(
    root: Path, num_photos: int, seed: int, glasses_fraction: float, funny_fraction: float
) -> None:
    """Unaligned scenes holding one smaller face (or none) and ``faces.json`` with labels and boxes."""
    folder = root / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    faces = {}
    for index in range(num_photos):
        rng = np.random.default_rng([seed, 1, index])
        height, width = int(rng.integers(180, 260)), int(rng.integers(220, 340))
        scene = _background(rng, height, width)
        entry = {"label": None, "face_box": None}
        if index % 5 != 4:  # every fifth photo has no face: the "no_face" answer needs examples
            side = int(rng.integers(70, min(height, width) - 20))
            face, label = _sample_face(rng, _random_identity(rng), side, glasses_fraction, funny_fraction)
            x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
            scene[y : y + side, x : x + side] = face
            entry = {"label": label, "face_box": [x, y, side, side]}
        name = f"photo_{index:04d}.jpg"
        _write_jpeg(folder / name, scene)
        faces[name] = entry
    (folder / "faces.json").write_text(json.dumps(faces, indent=1) + "\n")


def generate_meglass(
    root: str | Path,
    num_images: int = 400,
    seed: int = 0,
    image_size: int = 120,
    glasses_fraction: float = 0.4,
    funny_fraction: float = 0.15,
    images_per_identity: int = 4,
    num_photos: int = 0,
) -> Path:
    """Write a synthetic MeGlass dataset under ``root`` and return the list file (``root/meta.txt``)."""
    root = Path(root)
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    lines = []
    for index in range(num_images):
        person = index // images_per_identity
        identity = _random_identity(np.random.default_rng([seed, 0, person]))
        rng = np.random.default_rng([seed, 2, index])
        face, label = _sample_face(rng, identity, image_size, glasses_fraction, funny_fraction)
        name = f"id{person:05d}_{index:06d}.jpg"
        _write_jpeg(images / name, face)
        lines.append(f"images/{name} {label}\n")
    list_file = root / LIST_FILE
    list_file.write_text("".join(lines))
    if num_photos:
        _write_photos(root, num_photos, seed, glasses_fraction, funny_fraction)
    return list_file
