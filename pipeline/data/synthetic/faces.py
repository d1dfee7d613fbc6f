"""The one cartoon-face painter of the synthetic generators: a face look, its head, eyes, nose and mouth, mask
states, glasses, backgrounds, photometric jitter and image writing.

Face geometry is in face units: a ``Frame`` puts (0, 0) at the face centre and (+-1, +-1) on the face ellipse's
sides, top and bottom. Everything is drawn anti-aliased in 1/16-pixel fixed point, so small faces keep their shape.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

Colour = tuple[int, int, int]
MASK_TOPS = {"worn": (-0.06, -0.02), "incorrect": (0.31, 0.36)}  # mask top edge: over the nose / below it
HAIR_STYLES = ("bald", "short", "long", "fringe")
LENS_SHAPES = ("round", "oval", "rect", "aviator")
SKIN_TONES = ((255, 224, 196), (241, 194, 160), (224, 172, 130), (198, 134, 95), (141, 85, 54), (94, 58, 40))
HAIR_COLOURS = ((30, 25, 20), (70, 45, 25), (120, 80, 40), (200, 170, 100), (150, 60, 30))
MASK_COLOURS = ((245, 245, 245), (165, 205, 235), (35, 35, 40), (140, 140, 150), (235, 175, 195))
FRAME_COLOURS = ((15, 15, 15), (90, 55, 30), (200, 170, 60), (180, 180, 190), (170, 30, 30), (30, 60, 160))
MIN_CONTRAST = 150  # summed absolute RGB difference between a plain background and the colours to keep visible


def random_colour(rng: np.random.Generator, low: int = 0, high: int = 256) -> Colour:
    return tuple(int(c) for c in rng.integers(low, high, size=3))


def pick(rng: np.random.Generator, palette: tuple[Colour, ...], jitter: int = 0) -> Colour:
    """A palette colour with up to ``jitter`` added to or taken from each channel."""
    base = np.array(palette[rng.integers(len(palette))]) + rng.integers(-jitter, jitter + 1, size=3)
    return tuple(int(c) for c in np.clip(base, 0, 255))


def shade(colour: Colour, factor: float) -> Colour:
    return tuple(int(c * factor) for c in colour)


@dataclass(frozen=True)
class Glasses:
    """One pair of glasses in face units: lens shape and half-size, frame thickness and colour, tint."""

    shape: str
    half_width: float
    half_height: float
    thickness: float
    colour: Colour
    sunglasses: bool
    tint_alpha: float


def random_glasses(rng: np.random.Generator, eye_gap: float) -> Glasses:
    """Glasses sized to fit eyes ``eye_gap`` either side of the midline."""
    sunglasses = bool(rng.random() < 0.3)
    return Glasses(
        shape=LENS_SHAPES[rng.integers(len(LENS_SHAPES))],
        half_width=float(rng.uniform(0.55, 0.85) * eye_gap),
        half_height=float(rng.uniform(0.12, 0.2)),
        thickness=float(rng.uniform(0.025, 0.1)),
        colour=pick(rng, FRAME_COLOURS, 25),
        sunglasses=sunglasses,
        tint_alpha=float(rng.uniform(0.75, 0.95) if sunglasses else rng.uniform(0.0, 0.2)),
    )


@dataclass(frozen=True)
class FaceLook:
    """What stays the same across one person's images, in face units (``aspect``: face height / width)."""

    skin: Colour
    hair: Colour
    hair_style: str
    hair_line: float
    aspect: float
    eye_gap: float
    eye_y: float
    eye_size: float
    iris: Colour
    brow_tilt: float
    nose_len: float
    mouth_w: float
    mouth_y: float
    lips: Colour
    beard: bool = False
    wrinkles: bool = False
    mole: tuple[float, float] | None = None
    glasses: Glasses | None = None


def random_look(rng: np.random.Generator, **fixed) -> FaceLook:
    """A random person; ``fixed`` fields (e.g. ``hair_style="long"``) replace the drawn ones."""
    skin = pick(rng, SKIN_TONES, 12)
    eye_gap = float(rng.uniform(0.36, 0.52))
    look = FaceLook(
        skin=skin,
        hair=pick(rng, HAIR_COLOURS, 15),
        hair_style=HAIR_STYLES[rng.integers(len(HAIR_STYLES))],
        hair_line=float(rng.uniform(0.3, 0.42)),
        aspect=float(rng.uniform(1.15, 1.4)),
        eye_gap=eye_gap,
        eye_y=float(rng.uniform(-0.3, -0.2)),
        eye_size=float(rng.uniform(0.06, 0.09)),
        iris=random_colour(rng, 20, 160),
        brow_tilt=float(rng.uniform(-0.06, 0.06)),
        nose_len=float(rng.uniform(0.3, 0.4)),
        mouth_w=float(rng.uniform(0.18, 0.34)),
        mouth_y=float(rng.uniform(0.44, 0.56)),
        lips=(int(skin[0] * 0.8), int(skin[1] * 0.45), int(skin[2] * 0.45)),
        beard=bool(rng.random() < 0.2),
        mole=(float(rng.uniform(-0.5, 0.5)), float(rng.uniform(-0.1, 0.6))) if rng.random() < 0.4 else None,
        glasses=random_glasses(rng, eye_gap) if rng.random() < 0.25 else None,
    )
    return replace(look, **fixed)


@dataclass(frozen=True)
class Frame:
    """Where a face sits in the image: centre and half-axes of the face ellipse, in pixels."""

    cx: float
    cy: float
    ax: float
    ay: float

    def pixels(self, points) -> np.ndarray:
        p = np.asarray(points, dtype=float)
        return np.stack([self.cx + p[..., 0] * self.ax, self.cy + p[..., 1] * self.ay], axis=-1)

    def fixed(self, points) -> np.ndarray:
        return np.round(self.pixels(points) * 16).astype(np.int32)

    def width(self, thickness: float) -> int:
        return max(1, int(round(thickness * self.ax)))


def ellipse(canvas, f: Frame, centre, axes, colour, thickness: float = 0.0, arc=(0, 360)) -> None:
    """A filled (``thickness`` 0) or outlined ellipse arc, in face units."""
    a = np.maximum(16, np.round(np.multiply(axes, (f.ax, f.ay)) * 16)).astype(int)
    width = f.width(thickness) if thickness else -1
    cv2.ellipse(canvas, tuple(f.fixed(centre).tolist()), tuple(a.tolist()), 0, arc[0], arc[1], colour, width,
                cv2.LINE_AA, 4)


def polygon(canvas, f: Frame, points, colour, thickness: float = 0.0, closed: bool = True) -> None:
    """A filled polygon (``thickness`` 0) or a polyline, in face units."""
    fixed = [f.fixed(points)]
    if thickness:
        cv2.polylines(canvas, fixed, closed, colour, f.width(thickness), cv2.LINE_AA, 4)
    else:
        cv2.fillPoly(canvas, fixed, colour, cv2.LINE_AA, 4)


def paint_face(canvas: np.ndarray, f: Frame, look: FaceLook, rng: np.random.Generator, mask: str | None = None,
               mask_colour: Colour = MASK_COLOURS[0], glasses_at: str = "eyes", clothes: Colour | None = None) -> np.ndarray:
    """Draw ``look`` into ``canvas`` at ``f``; returns its 5 landmarks (eyes, nose tip, mouth corners) in pixels.

    ``mask``: None, "worn" (over nose and mouth) or "incorrect" (below the nose); ``glasses_at``: where
    ``look.glasses`` sit ("eyes", "forehead", "mouth" or "chin"); ``clothes``: a neck and shoulders in that colour.
    """
    _head(canvas, f, look, clothes)
    _eyes(canvas, f, look, rng)
    tip = look.eye_y + look.nose_len
    nose = shade(look.skin, 0.7)
    polygon(canvas, f, [(0, look.eye_y + 0.08), (-0.07, tip), (0.02, tip)], nose, 0.04, closed=False)
    ellipse(canvas, f, (0, tip), (0.13, 0.05), nose, 0.04, arc=(0, 180))
    if look.beard:
        ellipse(canvas, f, (0, look.mouth_y - 0.05), (0.8, 1.08 - look.mouth_y), look.hair, arc=(0, 180))
    smile = rng.uniform(0.0, 0.05)
    corners = [(-look.mouth_w, look.mouth_y), (look.mouth_w, look.mouth_y)]
    ellipse(canvas, f, (0, look.mouth_y), (look.mouth_w, 0.05 + smile), look.lips, arc=(0, 180))
    polygon(canvas, f, corners, look.lips, 0.04, closed=False)
    if look.mole is not None:
        ellipse(canvas, f, look.mole, (0.04, 0.04 * f.ax / f.ay), (60, 35, 25))
    if mask is not None:
        _mask(canvas, f, look, rng.uniform(*MASK_TOPS[mask]), mask_colour)
    if look.glasses is not None:
        _glasses(canvas, f, look, glasses_at, rng)
    return f.pixels([(-look.eye_gap, look.eye_y), (look.eye_gap, look.eye_y), (0, tip), *corners])


def _head(canvas: np.ndarray, f: Frame, look: FaceLook, clothes: Colour | None) -> None:
    """Shoulders and neck (with ``clothes``), long hair, ears, the face, the hair cap or fringe and age wrinkles."""
    if clothes is not None:
        ellipse(canvas, f, (0, 2.6), (2.0, 1.2), clothes, arc=(180, 360))
    if look.hair_style == "long":  # falls beside the face down to the shoulders
        ellipse(canvas, f, (0, 0.35), (1.35, 1.35), look.hair)
    if clothes is not None:
        ellipse(canvas, f, (0, 1.15), (0.4, 0.5), look.skin)
    for side in (-1, 1):
        ellipse(canvas, f, (side * 0.97, look.eye_y + 0.15), (0.13, 0.2), look.skin)
    ellipse(canvas, f, (0, 0), (1, 1), look.skin)
    hair_line = -1 + look.hair_line
    if look.hair_style != "bald":
        ellipse(canvas, f, (0, hair_line), (1.04, look.hair_line + 0.12), look.hair, arc=(180, 360))
    if look.hair_style == "fringe":
        polygon(canvas, f, [(-0.8, hair_line - 0.1), (0.8, hair_line - 0.1), (0.7, hair_line + 0.14),
                            (-0.7, hair_line + 0.14)], look.hair)
    if look.wrinkles:
        brow = look.eye_y - look.eye_size - 0.1
        for k in (1, 2):
            y = hair_line + (brow - hair_line) * k / 3
            polygon(canvas, f, [(-0.45, y), (0.45, y)], shade(look.skin, 0.5), 0.03, closed=False)


def _eyes(canvas: np.ndarray, f: Frame, look: FaceLook, rng: np.random.Generator) -> None:
    """Eye whites, irises looking in one direction, pupils, upper lids and brows."""
    size, round_ = look.eye_size, f.ay / f.ax  # ``round_`` turns a height into the width of a circle
    gaze = rng.normal(0, 0.15 * size, 2)
    brows = look.hair if look.hair_style != "bald" else shade(look.skin, 0.55)
    for side in (-1, 1):
        x, y = side * look.eye_gap, look.eye_y
        ellipse(canvas, f, (x, y), (1.7 * size * round_, size), (245, 245, 240))
        ellipse(canvas, f, (x + gaze[0], y + gaze[1]), (0.75 * size * round_, 0.75 * size), look.iris)
        ellipse(canvas, f, (x + gaze[0], y + gaze[1]), (0.33 * size * round_, 0.33 * size), (10, 10, 10))
        ellipse(canvas, f, (x, y), (1.7 * size * round_, size), shade(look.skin, 0.5), 0.03, arc=(180, 360))
        brow_y, half = y - size - 0.1, 2 * size * round_
        points = [(x - half, brow_y + side * look.brow_tilt), (x + half, brow_y - side * look.brow_tilt)]
        polygon(canvas, f, points, brows, 0.05, closed=False)


def _mask(canvas: np.ndarray, f: Frame, look: FaceLook, top: float, colour: Colour) -> None:
    """A mask from ``top`` down to the chin, with straps to the ears and two pleats."""
    polygon(canvas, f, [(-0.92, top + 0.05), (0, top - 0.03), (0.92, top + 0.05), (0.82, 0.75), (0, 1.03),
                        (-0.82, 0.75)], colour)
    strap = shade(colour, 0.65)
    for side in (-1, 1):
        polygon(canvas, f, [(side * 0.9, top + 0.1), (side * 1.0, look.eye_y + 0.1)], strap, 0.04, closed=False)
    for fraction in (0.35, 0.6):
        y = top + fraction * (1 - top)
        polygon(canvas, f, [(-0.6, y), (0.6, y)], strap, 0.04, closed=False)


def _lens(glasses: Glasses, centre: tuple[float, float], side: int, round_: float) -> np.ndarray:
    """Closed lens outline (N x 2 face units) around ``centre``; ``side`` -1 left, 1 right."""
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    x, y = np.cos(t), np.sin(t)
    half_width = glasses.half_width
    if glasses.shape == "rect":
        x, y = np.sign(x) * np.abs(x) ** 0.35, np.sign(y) * np.abs(y) ** 0.35
    elif glasses.shape == "aviator":  # teardrop: the lower half bulges down and towards the nose
        lower = np.clip(y, 0, None)
        y, x = y * (1 + 0.45 * lower), x - 0.25 * lower * side
    elif glasses.shape == "round":
        half_width = glasses.half_height * round_
    return np.stack([centre[0] + half_width * x, centre[1] + glasses.half_height * y], axis=1)


def _glasses(canvas: np.ndarray, f: Frame, look: FaceLook, place: str, rng: np.random.Generator) -> None:
    """Lenses (tinted), frame, bridge and temple arms, centred at ``place``."""
    glasses = look.glasses
    cy = {"eyes": look.eye_y + rng.uniform(-0.03, 0.04), "forehead": look.eye_y - rng.uniform(0.45, 0.6),
          "mouth": look.mouth_y, "chin": look.eye_y + rng.uniform(1.12, 1.27)}[place]
    cx = rng.uniform(-0.04, 0.04)
    lenses = [_lens(glasses, (cx + side * look.eye_gap, cy), side, f.ay / f.ax) for side in (-1, 1)]
    if glasses.tint_alpha > 0:
        tint = canvas.copy()
        colour = shade(glasses.colour, 0.3) if glasses.sunglasses else (200, 220, 235)
        for lens in lenses:
            polygon(tint, f, lens, colour)
        cv2.addWeighted(tint, glasses.tint_alpha, canvas, 1 - glasses.tint_alpha, 0, dst=canvas)
    top, arm = cy - 0.4 * glasses.half_height, cy - 0.5 * glasses.half_height
    lines = [*lenses, [(lenses[0][:, 0].max(), top), (lenses[1][:, 0].min(), top)]]
    lines += [[(lens[:, 0].min() if side < 0 else lens[:, 0].max(), arm), (cx + side, cy - 0.04)]
              for lens, side in zip(lenses, (-1, 1), strict=True)]
    for k, points in enumerate(lines):
        polygon(canvas, f, points, glasses.colour, glasses.thickness, closed=k < 2)


def face_region(height: int, width: int, f: Frame) -> np.ndarray:
    """Float mask (0..1) of the face and hair cap at ``f``."""
    region = np.zeros((height, width), np.uint8)
    ellipse(region, f, (0, -0.05), (1.05, 1.08), 255)
    return region.astype(np.float32) / 255


def background(rng: np.random.Generator, height: int, width: int, shapes: int = 0, avoid: tuple = ()) -> np.ndarray:
    """RGB uint8 backdrop: a two-colour gradient at a random angle with ``shapes // 3`` to ``shapes`` blurred blocks,
    bars or discs (one kind per image). With ``avoid`` it is one colour, lightly shaded, far from those colours."""
    while True:
        first = np.array(random_colour(rng))
        if all(np.abs(first - np.array(c)).sum() >= MIN_CONTRAST for c in avoid):
            break
    second = np.clip(first + rng.integers(-20, 21, 3), 0, 255) if avoid else np.array(random_colour(rng))
    angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width, 2)
    t = np.clip(0.5 + (xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle), 0, 1)[..., None]
    image = np.round(first * (1 - t) + second * t).astype(np.uint8)
    kind = rng.integers(3)
    for _ in range(int(rng.integers(shapes // 3, shapes + 1))):
        colour, x, y = rng.integers(0, 256, 3).tolist(), int(rng.integers(width)), int(rng.integers(height))
        if kind == 0:
            size = (int(rng.integers(width // 8, width // 2)), int(rng.integers(height // 8, height // 2)))
            cv2.rectangle(image, (x, y), (x + size[0], y + size[1]), colour, -1)
        elif kind == 1:
            cv2.line(image, (x, 0), (int(rng.integers(width)), height), colour, int(rng.integers(2, 12)))
        else:
            cv2.circle(image, (x, y), int(rng.integers(4, max(5, width // 8))), colour, -1)
    return cv2.GaussianBlur(image, (0, 0), 1.5) if shapes else image


def warp(rng: np.random.Generator, image: np.ndarray, degrees: float, zoom: float, shift: float):
    """Random rotation, scale and shift about the centre (borders replicated); returns the image and the 2x3 matrix."""
    height, width = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((width / 2, height / 2), rng.uniform(-degrees, degrees), rng.uniform(1 - zoom, 1 + zoom))
    matrix[:, 2] += rng.uniform(-shift, shift, 2) * (width, height)
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE), matrix


def photometric(rng: np.random.Generator, image: np.ndarray, gain=(0.8, 1.2), bias: float = 20, noise=(2, 8),
                light: float = 0.0, blur: float = 0.0) -> np.ndarray:
    """Blur (with chance ``blur``), brightness gain and bias, a light gradient up to ``light``, sensor noise; uint8."""
    image = image.astype(np.float32)
    if rng.random() < blur:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.2))
    level = np.full(image.shape[:2], rng.uniform(*gain), np.float32)
    if light:
        yy, xx = np.mgrid[0 : image.shape[0], 0 : image.shape[1]] / max(image.shape[:2]) - 0.5
        direction = rng.uniform(0, 2 * np.pi)
        level *= 1 + rng.uniform(0, light) * (xx * np.cos(direction) + yy * np.sin(direction))
    image = image * level[..., None] + rng.uniform(-bias, bias) + rng.normal(0, rng.uniform(*noise), image.shape)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def write_image(path: Path, rgb: np.ndarray) -> None:
    """Encode an RGB image by ``path``'s extension (JPEG at quality 95) and write it."""
    ext = path.suffix.lower()
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext in (".jpg", ".jpeg") else []
    ok, data = cv2.imencode(ext, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path}")
    path.write_bytes(data.tobytes())
