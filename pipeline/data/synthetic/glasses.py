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
from dataclasses import replace
from pathlib import Path

import numpy as np

from pipeline.data.synthetic.faces import (
    FRAME_COLOURS,
    FaceLook,
    Frame,
    background,
    paint_face,
    photometric,
    pick,
    random_glasses,
    random_look,
    warp,
    write_image,
)

LIST_FILE = "meta.txt"
MISPLACEMENTS = ("forehead", "mouth", "chin")
REFERENCE_SIZE = 120  # face geometry below is in a 120x120 crop, scaled to ``image_size``


def _random_identity(rng: np.random.Generator) -> FaceLook:
    """One synthetic person (no glasses of their own: each image decides)."""
    style = "bald" if rng.random() < 0.1 else ("short", "long", "fringe")[rng.integers(3)]
    return random_look(rng, hair_style=style, glasses=None, beard=False, mole=None)


def draw_face(rng: np.random.Generator, identity: FaceLook, size: int, glasses: bool, placement: str) -> np.ndarray:
    """An aligned RGB face of ``size`` x ``size``, eyes at about 46/120 of the height; with ``glasses`` a random
    pair at ``placement`` ("eyes", "forehead", "mouth", "chin")."""
    scale = size / REFERENCE_SIZE
    look = replace(identity, glasses=random_glasses(rng, identity.eye_gap) if glasses else None)
    canvas = background(rng, size, size, shapes=3)
    ax = rng.uniform(35, 43) * scale
    ay = ax * look.aspect
    frame = Frame(60 * scale, (46 + rng.uniform(-1.5, 1.5)) * scale - look.eye_y * ay, ax, ay)
    paint_face(canvas, frame, look, rng, glasses_at=placement, clothes=pick(rng, FRAME_COLOURS, 60))
    canvas, _ = warp(rng, canvas, degrees=7, zoom=0.06, shift=0.03)
    return photometric(rng, canvas, gain=(0.75, 1.2), bias=25, noise=(1, 6), blur=0.3)


def _sample_face(
    rng: np.random.Generator, identity: FaceLook, size: int, glasses_fraction: float, funny_fraction: float
) -> tuple[np.ndarray, int]:
    """One face image and its label (1 only for glasses on the eyes)."""
    draw = rng.random()
    placement = "eyes" if draw < glasses_fraction else MISPLACEMENTS[rng.integers(len(MISPLACEMENTS))]
    face = draw_face(rng, identity, size, draw < glasses_fraction + funny_fraction, placement)
    return face, int(draw < glasses_fraction)


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
        scene = background(rng, height, width, shapes=3)
        entry = {"label": None, "face_box": None}
        if index % 5 != 4:  # every fifth photo has no face: the "no_face" answer needs examples
            side = int(rng.integers(70, min(height, width) - 20))
            face, label = _sample_face(rng, _random_identity(rng), side, glasses_fraction, funny_fraction)
            x, y = int(rng.integers(0, width - side)), int(rng.integers(0, height - side))
            scene[y : y + side, x : x + side] = face
            entry = {"label": label, "face_box": [x, y, side, side]}
        name = f"photo_{index:04d}.jpg"
        write_image(folder / name, scene)
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
        write_image(images / name, face)
        lines.append(f"images/{name} {label}\n")
    list_file = root / LIST_FILE
    list_file.write_text("".join(lines))
    if num_photos:
        _write_photos(root, num_photos, seed, glasses_fraction, funny_fraction)
    return list_file
