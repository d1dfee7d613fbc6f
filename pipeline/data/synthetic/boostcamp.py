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

import numpy as np

from pipeline.data.formats.boostcamp import GENDER_NAMES, MASK_FILE_LABELS, age_group, encode_class
from pipeline.data.synthetic.faces import (
    HAIR_COLOURS,
    MASK_COLOURS,
    FaceLook,
    Frame,
    background,
    paint_face,
    photometric,
    pick,
    random_colour,
    random_look,
    write_image,
)
from pipeline.utils.files import write_csv

AGE_GROUP_SHARES = (0.45, 0.47, 0.08)
AGE_RANGES = ((18, 29), (30, 59), (60, 75))
FEMALE_SHARE = 0.6
EXTENSIONS = (".jpg", ".png", ".jpeg", ".JPG")
EXTENSION_SHARES = (0.75, 0.1, 0.1, 0.05)
# The first person shows every extension, so even a tiny tree has odd ones.
FIRST_PERSON_EXTENSIONS = (".jpg", ".png", ".jpeg", ".JPG", ".JPEG", ".PNG", ".jpg")
GREY_HAIR = ((190, 190, 190), (225, 225, 220), (160, 160, 165))
MASK_STATES = ("worn", "incorrect", None)  # by boostcamp mask label: wear, incorrect, normal


@dataclass(frozen=True)
class _Person:
    person_id: str
    gender: int
    age: int
    look: FaceLook
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
    gender = int(rng.random() < FEMALE_SHARE)
    hair = pick(rng, GREY_HAIR if group == 2 else HAIR_COLOURS, 10)
    look = random_look(rng, hair=hair, hair_style=("short", "long")[gender], hair_line=0.38, eye_y=-0.18,
                       wrinkles=group > 0, beard=False, glasses=None)
    return _Person(person_id, gender, int(rng.integers(low, high + 1)), look, random_colour(rng),
                   float(rng.uniform(0.85, 1.1)))


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
            write_image(folder / f"{stem}{ext}", _render(rng, person, mask, size))
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
            write_image(images_dir / image_id, _render(rng, person, mask, size))
            rows.append([image_id, encode_class(mask, person.gender, age_group(person.age))])
    order = rng.permutation(len(rows))
    write_csv(eval_dir / "info.csv", ["ImageID", "ans"], [rows[i] for i in order])


def _render(rng: np.random.Generator, person: _Person, mask: int, size: tuple[int, int]) -> np.ndarray:
    """One RGB uint8 image of ``person`` with mask state ``mask``."""
    h, w = size
    image = background(rng, h, w, avoid=(person.look.skin, person.look.hair))
    scale = person.scale * rng.uniform(0.95, 1.05)
    frame = Frame(w / 2 + rng.uniform(-0.06, 0.06) * w, (0.47 + rng.uniform(-0.04, 0.04)) * h, 0.27 * w * scale,
                  0.28 * h * scale)
    colour = random_colour(rng) if rng.random() < 0.3 else pick(rng, MASK_COLOURS, 8)
    paint_face(image, frame, person.look, rng, MASK_STATES[mask], colour, clothes=person.clothes)
    return photometric(rng, image)
