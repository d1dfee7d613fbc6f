"""Synthetic faces in the boostcamp mask / gender / age layout, with learnable drawn cues.

Each person is a face-like ellipse on a coloured background, seen 7 times (``mask1``..``mask5``,
``incorrect_mask``, ``normal``). The labels show as:

- mask: wear = mask over nose and mouth; incorrect = mask pulled below the nose; normal = none
- gender: male = short hair cap; female = long hair falling beside the face to the shoulders
- age: < 30 = smooth forehead; 30..59 = two forehead wrinkles; >= 60 = wrinkles and grey hair

Nuisances: background (kept apart from skin and hair colour), skin tone, clothes, mask colour, face size and position, brightness,
noise and the file format. About 8 % of people are >= 60 and 60 % female, as in the real data.
Files mix ``.jpg``, ``.jpeg``, ``.png`` and upper-case variants, and the tree holds the dot-file
junk the real archive has (``.DS_Store``, ``._mask1.jpg``), so the real reader is exercised.
The eval split's ``info.csv`` carries the true class in ``ans`` so predictions can be scored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pipeline.data.formats.boostcamp import GENDER_NAMES, MASK_FILE_LABELS, age_group, encode_class
from pipeline.utils.files import write_csv

AGE_GROUP_SHARES = (0.45, 0.47, 0.08)
AGE_RANGES = ((18, 29), (30, 59), (60, 75))
FEMALE_SHARE = 0.6
# Summed absolute RGB difference between background and skin or hair.
MIN_BACKGROUND_CONTRAST = 150
EXTENSIONS = (".jpg", ".png", ".jpeg", ".JPG")
EXTENSION_SHARES = (0.75, 0.1, 0.1, 0.05)
# The first person shows every extension, so even a tiny tree has odd ones.
FIRST_PERSON_EXTENSIONS = (".jpg", ".png", ".jpeg", ".JPG", ".JPEG", ".PNG", ".jpg")
YOUNG_HAIR = ((25, 20, 20), (70, 45, 25), (120, 80, 40), (200, 170, 90), (140, 60, 30))
GREY_HAIR = ((190, 190, 190), (225, 225, 220), (160, 160, 165))
SKIN_TONES = ((245, 215, 190), (230, 190, 160), (200, 150, 115), (160, 110, 80), (110, 75, 55))


@dataclass(frozen=True)
class _Person:
    person_id: str
    gender: int
    age: int
    background: tuple[int, int, int]
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    clothes: tuple[int, int, int]
    scale: float


def generate_boostcamp(
    root: str | Path,
    num_people: int = 300,
    num_eval_people: int | None = None,
    image_size: tuple[int, int] = (96, 72),
    seed: int = 0,
) -> Path:
    """Write train/ and eval/ in the boostcamp layout under ``root``; returns ``root``.

    ``image_size`` is (height, width). ``num_eval_people`` (default ``num_people // 5``, at least 1)
    further people are drawn for eval/, 7 images each, shuffled, under hash-like names.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    ids = sorted(rng.choice(np.arange(1, 10 * (num_people + 1)), size=num_people, replace=False))
    people = [_draw_person(rng, f"{i:06d}") for i in ids]
    _write_train(root / "train", people, image_size, rng)
    n_eval = num_eval_people if num_eval_people is not None else max(1, num_people // 5)
    eval_people = [_draw_person(rng, f"eval{i:05d}") for i in range(n_eval)]
    _write_eval(root / "eval", eval_people, image_size, rng)
    return root


def _draw_person(rng: np.random.Generator, person_id: str) -> _Person:
    group = int(rng.choice(3, p=AGE_GROUP_SHARES))
    low, high = AGE_RANGES[group]
    hair_palette = GREY_HAIR if group == 2 else YOUNG_HAIR
    skin = _jitter(rng, SKIN_TONES[rng.integers(len(SKIN_TONES))], 12)
    hair = _jitter(rng, hair_palette[rng.integers(len(hair_palette))], 10)
    return _Person(
        person_id=person_id,
        gender=int(rng.random() < FEMALE_SHARE),
        age=int(rng.integers(low, high + 1)),
        background=_background(rng, avoid=(skin, hair)),
        skin=skin,
        hair=hair,
        clothes=_colour(rng),
        scale=float(rng.uniform(0.85, 1.1)),
    )


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(c) for c in rng.integers(0, 256, size=3))


def _background(rng: np.random.Generator, avoid: tuple[tuple[int, int, int], ...]) -> tuple[int, int, int]:
    """A random colour far enough from the face and hair colours that their outlines stay visible."""
    while True:
        colour = _colour(rng)
        if all(np.abs(np.subtract(colour, other)).sum() >= MIN_BACKGROUND_CONTRAST for other in avoid):
            return colour


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in colour)


def _write_train(
    train_dir: Path, people: list[_Person], size: tuple[int, int], rng: np.random.Generator
) -> None:
    images_dir = train_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    (images_dir / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    rows = []
    for index, person in enumerate(people):
        folder_name = f"{person.person_id}_{GENDER_NAMES[person.gender]}_Asian_{person.age}"
        folder = images_dir / folder_name
        folder.mkdir(exist_ok=True)
        for k, (stem, mask) in enumerate(MASK_FILE_LABELS.items()):
            ext = FIRST_PERSON_EXTENSIONS[k] if index == 0 else rng.choice(EXTENSIONS, p=EXTENSION_SHARES)
            _save(folder / f"{stem}{ext}", _render(rng, person, mask, size))
        if index % 10 == 0:
            # macOS archives leave AppleDouble companions: image-named files that are not images.
            (folder / "._mask1.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
        rows.append([person.person_id, GENDER_NAMES[person.gender], "Asian", person.age, folder_name])
    write_csv(train_dir / "train.csv", ["id", "gender", "race", "age", "path"], rows)


def _write_eval(
    eval_dir: Path, people: list[_Person], size: tuple[int, int], rng: np.random.Generator
) -> None:
    images_dir = eval_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for person in people:
        for stem, mask in MASK_FILE_LABELS.items():
            image_id = hashlib.sha1(f"{person.person_id}/{stem}".encode()).hexdigest() + ".jpg"
            _save(images_dir / image_id, _render(rng, person, mask, size))
            rows.append([image_id, encode_class(mask, person.gender, age_group(person.age))])
    order = rng.permutation(len(rows))
    write_csv(eval_dir / "info.csv", ["ImageID", "ans"], [rows[i] for i in order])


def _save(path: Path, rgb: np.ndarray) -> None:
    ok, data = cv2.imencode(path.suffix.lower(), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode {path}")
    path.write_bytes(data.tobytes())


def _render(rng: np.random.Generator, person: _Person, mask: int, size: tuple[int, int]) -> np.ndarray:
    """One RGB uint8 image of ``person`` with mask state ``mask``."""
    h, w = size
    image = np.empty((h, w, 3), np.uint8)
    image[:] = _jitter(rng, person.background, 15)
    scale = person.scale * rng.uniform(0.95, 1.05)
    ax, ay = 0.27 * w * scale, 0.28 * h * scale
    cx = w / 2 + rng.uniform(-0.06, 0.06) * w
    cy = 0.47 * h + rng.uniform(-0.04, 0.04) * h

    def pt(dx: float, dy: float) -> tuple[int, int]:
        """Pixel at (dx, dy) in face half-axes from the face centre."""
        return int(round(cx + dx * ax)), int(round(cy + dy * ay))

    def axes(sx: float, sy: float) -> tuple[int, int]:
        return max(1, int(round(sx * ax))), max(1, int(round(sy * ay)))

    aa = cv2.LINE_AA
    cv2.ellipse(image, pt(0, 2.6), axes(2.0, 1.2), 0, 180, 360, person.clothes, -1, aa)
    if person.gender == 1:
        cv2.ellipse(image, pt(0, 0.35), axes(1.35, 1.35), 0, 0, 360, person.hair, -1, aa)
    cv2.ellipse(image, pt(0, 1.2), axes(0.35, 0.5), 0, 0, 360, person.skin, -1, aa)
    cv2.ellipse(image, pt(0, 0), axes(1, 1), 0, 0, 360, person.skin, -1, aa)
    cv2.ellipse(image, pt(0, -0.62), axes(1.04, 0.5), 0, 180, 360, person.hair, -1, aa)
    _draw_features(image, pt, axes, person)
    if mask != 2:
        _draw_mask(image, pt, axes, mask, _colour(rng) if rng.random() < 0.3 else _mask_colour(rng))
    return _photometric(rng, image)


def _draw_features(image: np.ndarray, pt, axes, person: _Person) -> None:
    """Eyes, nose, mouth and the age-dependent forehead wrinkles."""
    dark = (40, 30, 30)
    shade = tuple(int(c * 0.7) for c in person.skin)
    wrinkle = tuple(int(c * 0.5) for c in person.skin)
    aa = cv2.LINE_AA
    for side in (-1, 1):
        cv2.ellipse(image, pt(0.38 * side, -0.15), axes(0.14, 0.07), 0, 0, 360, dark, -1, aa)
    cv2.line(image, pt(0, -0.05), pt(-0.08, 0.22), shade, 1, aa)
    cv2.line(image, pt(-0.08, 0.22), pt(0.08, 0.22), shade, 1, aa)
    cv2.ellipse(image, pt(0, 0.5), axes(0.28, 0.06), 0, 0, 360, (170, 50, 60), -1, aa)
    if age_group(person.age) > 0:
        for dy in (-0.48, -0.36):
            cv2.line(image, pt(-0.45, dy), pt(0.45, dy), wrinkle, 1, aa)


def _draw_mask(image: np.ndarray, pt, axes, mask: int, colour: tuple[int, int, int]) -> None:
    """A worn mask covers nose and mouth; an incorrect one sits below the nose with loose straps."""
    top = -0.02 if mask == 0 else 0.32
    cv2.ellipse(image, pt(0, top), axes(0.98, 1.04 - top), 0, 0, 180, colour, -1, cv2.LINE_AA)
    cv2.rectangle(image, pt(-0.9, top), pt(0.9, top + 0.08), colour, -1)
    strap = tuple(int(c * 0.6) for c in colour)
    for side in (-1, 1):
        cv2.line(image, pt(0.9 * side, top + 0.05), pt(1.0 * side, -0.2), strap, 1, cv2.LINE_AA)


def _mask_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    palette = ((245, 245, 245), (170, 200, 235), (30, 30, 35), (140, 140, 150), (235, 180, 200))
    return _jitter(rng, palette[rng.integers(len(palette))], 8)


def _photometric(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Brightness, contrast and sensor noise."""
    gain = rng.uniform(0.8, 1.2)
    bias = rng.uniform(-20, 20)
    noise = rng.normal(0, rng.uniform(2, 8), image.shape)
    return np.clip(image * gain + bias + noise, 0, 255).astype(np.uint8)
