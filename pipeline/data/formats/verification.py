"""Face-verification folder format (Kryptonite): ``images/<identity>/<file>`` + ``meta.json`` real/fake flags.

Layout under ``root``::

    images/<identity>/<file>      one folder per person; any image extension, any case
    meta.json                     {"<identity>/<file>": 0 | 1, ...}  0 = real, 1 = fake (generated)

Identity names may be zero-padded in the folder name and not in the meta key (or the other way
round): numeric names are compared without leading zeros ("0001" == "1"); other names as is.

Pairs CSV (test submissions): consecutive rows form a pair, rows 2k and 2k+1 are pair k; a ``path``
column names the image, other columns (labels) are carried along. Scores are written as
``pair_id,similarity`` with optional ``same,threshold`` columns.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.formats.image_folder import drop_unreadable
from pipeline.data.io import is_image_file, load_image
from pipeline.data.splits import presplit_folders
from pipeline.utils.errors import UserError, require_path
from pipeline.utils.files import read_text, text_stream

IMAGES_DIR = "images"
META_FILE = "meta.json"


@dataclass(frozen=True)
class VerificationRecord:
    """One image: its file, its person (normalised name and 0-based index) and whether it is fake."""

    path: Path
    identity: str
    identity_index: int
    is_fake: bool


def normalise_identity(name: str) -> str:
    """Identity name without zero padding for numeric names ("0007" -> "7", "0" -> "0"); others as is."""
    return str(int(name)) if name.isdigit() else name


def _identity_sort_key(name: str) -> tuple[int, int, str]:
    """Numeric identities first in numeric order, then the others alphabetically."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def _meta_key(identity_folder: str, file_name: str) -> tuple[str, str]:
    return normalise_identity(identity_folder), file_name


def _read_meta(meta_path: Path) -> dict[tuple[str, str], bool]:
    """meta.json as {(normalised identity, file name): is_fake}; UserError on any malformed entry."""
    try:
        raw = json.loads(read_text(meta_path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise UserError(f"{meta_path}: not a readable JSON file ({exc})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{meta_path}: expected an object {{'<identity>/<file>': 0 or 1}}")
    meta: dict[tuple[str, str], bool] = {}
    for key, value in raw.items():
        parts = key.replace("\\", "/").strip("/").split("/")
        if len(parts) != 2 or not all(parts):
            raise UserError(f"{meta_path}: key '{key}' is not of the form '<identity>/<file>'")
        # bool is an int subclass: reject true/false as well as 2, 0.0 or "1".
        if type(value) is not int or value not in (0, 1):
            raise UserError(f"{meta_path}: '{key}' has value {value!r}; use 0 (real) or 1 (fake)")
        norm = _meta_key(*parts)
        if norm in meta:
            raise UserError(f"{meta_path}: '{key}' is listed twice (identity padding differs only)")
        meta[norm] = bool(value)
    return meta


def _scan_images(images_dir: Path) -> dict[tuple[str, str], Path]:
    """{(normalised identity, file name): path} for every image two levels under ``images_dir``."""
    found: dict[tuple[str, str], Path] = {}
    folder_of: dict[str, str] = {}
    for folder in sorted(p for p in images_dir.iterdir() if p.is_dir()):
        identity = normalise_identity(folder.name)
        if identity in folder_of:
            raise UserError(
                f"{images_dir}: folders '{folder_of[identity]}' and '{folder.name}' are the same identity "
                "once zero padding is removed; merge them"
            )
        folder_of[identity] = folder.name
        for path in sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p)):
            found[(identity, path.name)] = path
    return found


def read_verification(root: str | Path, skip_bad_files: bool = False) -> list[VerificationRecord]:
    """Records for every image under ``root/images`` with its real/fake flag from ``root/meta.json``.

    An image missing from meta.json or that does not decode raises UserError naming it, or is skipped
    (with a warning) when ``skip_bad_files``. A meta.json entry whose file is missing always raises UserError naming it.
    """
    root = require_path(root, "data.root", "dataset folder")
    images_dir = require_path(root / IMAGES_DIR, "data.root", "images folder")
    meta_path = require_path(root / META_FILE, "data.root", "meta.json file")
    meta = _read_meta(meta_path)
    images = _scan_images(images_dir)
    missing_files = sorted(set(meta) - set(images))
    if missing_files:
        identity, name = missing_files[0]
        raise UserError(
            f"{meta_path}: entry '{identity}/{name}' has no image under {images_dir} "
            f"({len(missing_files)} such entries); remove them or restore the files"
        )
    unlisted = sorted(set(images) - set(meta))
    if unlisted and not skip_bad_files:
        raise UserError(
            f"{images[unlisted[0]]}: not listed in {meta_path} ({len(unlisted)} such images); "
            "add them or set skip_bad_files=true"
        )
    if unlisted:
        warnings.warn(f"{images_dir}: skipped {len(unlisted)} images not listed in {meta_path}", stacklevel=2)
    keys = sorted(set(images) & set(meta), key=lambda k: (_identity_sort_key(k[0]), k[1]))
    if not keys:
        raise UserError(f"{images_dir}: no images listed in {meta_path}")
    index = {name: i for i, name in enumerate(sorted({k[0] for k in keys}, key=_identity_sort_key))}
    return drop_unreadable([VerificationRecord(images[k], k[0], index[k[0]], meta[k]) for k in keys], skip_bad_files)


def read_verification_splits(
    root: str | Path, skip_bad_files: bool = False
) -> tuple[list[VerificationRecord], list[str] | None]:
    """Records of ``root`` (one dataset), or of ``root/{train,val|valid|validation,test}/`` (each a
    dataset, test optional) with each record's split. Identity indices run over all splits; an
    identity name in two split folders counts as two people."""
    root = require_path(root, "data.root", "dataset folder")
    folders = presplit_folders(root) if not (root / IMAGES_DIR).is_dir() else None
    if folders is None:
        return read_verification(root, skip_bad_files), None
    records: list[VerificationRecord] = []
    splits: list[str] = []
    index: dict[tuple[str, str], int] = {}
    for split, folder in folders.items():
        for record in read_verification(folder, skip_bad_files):
            person = index.setdefault((split, record.identity), len(index))
            records.append(VerificationRecord(record.path, record.identity, person, record.is_fake))
            splits.append(split)
    return records, splits


class VerificationDataset(Dataset):
    """Items ``{"image": float CxHxW in [0,1] (or the transform's output), "label": identity index,
    "is_fake", "index": position in the dataset}``.

    ``transform`` is albumentations-style: called as ``transform(image=uint8 HxWx3)`` and returning a
    dict with ``"image"``; a numpy result is converted to a CxHxW float tensor scaled to [0, 1].
    With ``landmarks`` ({resolved image path: 5x2 points}, see ``pipeline.data.face_parts``) the
    image's points are passed too, as ``face_landmarks`` (None for an image without a row).
    """

    def __init__(self, records: Sequence[VerificationRecord], transform=None, landmarks: dict[Path, np.ndarray] | None = None,
                 images=None):
        self.records = list(records)
        self.transform = transform
        self.landmarks = landmarks
        self.images = images  # decoded once (pipeline.data.cache.CachedImages), or None to read each time

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        record = self.records[index]
        image = self.images[index] if self.images is not None else load_image(record.path)
        if self.transform is not None:
            extra = {} if self.landmarks is None else {"face_landmarks": self.landmarks.get(record.path.resolve())}
            image = self.transform(image=image, **extra)["image"]
        if isinstance(image, np.ndarray):
            image = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float() / 255.0
        return {
            "image": image,
            "label": torch.tensor(record.identity_index, dtype=torch.long),
            "is_fake": torch.tensor(record.is_fake, dtype=torch.bool),
            "index": torch.tensor(index, dtype=torch.long),
        }


def read_pairs_csv(path: str | Path, path_column: str = "path") -> list[tuple[dict[str, str], dict[str, str]]]:
    """Pairs from a CSV whose consecutive rows form a pair (rows 2k, 2k+1 -> pair k); rows as dicts."""
    path = require_path(path, "data.pairs_csv", "pairs CSV")
    with text_stream(path) as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or path_column not in reader.fieldnames:
            raise UserError(f"{path}: no '{path_column}' column (header: {reader.fieldnames})")
        rows = list(reader)
    for line, row in enumerate(rows, start=2):
        if not (row[path_column] or "").strip():
            raise UserError(f"{path}: line {line} has an empty '{path_column}'")
    if len(rows) % 2:
        raise UserError(f"{path}: {len(rows)} rows; consecutive rows form pairs, so the count must be even")
    return [(rows[i], rows[i + 1]) for i in range(0, len(rows), 2)]


def write_pairs_csv(path: str | Path, pairs: Sequence[tuple[dict[str, str], dict[str, str]]]) -> None:
    """Write pairs as consecutive CSV rows (the format ``read_pairs_csv`` reads)."""
    rows = [row for pair in pairs for row in pair]
    fieldnames = list(dict.fromkeys(key for row in rows for key in row))
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(rows)


def write_pair_scores(
    path: str | Path,
    similarity: Sequence[float],
    same: Sequence[bool] | None = None,
    threshold: float | None = None,
) -> None:
    """Write ``pair_id,similarity`` (plus ``same`` as 0/1 and ``threshold`` when given) per pair."""
    fieldnames = ["pair_id", "similarity"]
    fieldnames += ["same"] if same is not None else []
    fieldnames += ["threshold"] if threshold is not None else []
    with Path(path).open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(fieldnames)
        for pair_id, score in enumerate(similarity):
            row = [pair_id, repr(float(score))]
            row += [int(bool(same[pair_id]))] if same is not None else []
            row += [repr(float(threshold))] if threshold is not None else []
            writer.writerow(row)


def read_pair_scores(path: str | Path) -> dict[str, np.ndarray]:
    """Columns of a ``pair_id,similarity[,same,threshold]`` file as arrays (ints, floats, bools)."""
    path = require_path(path, "pair_scores", "scores CSV")
    with text_stream(path) as handle:
        rows = list(csv.DictReader(handle))
    if not rows or not {"pair_id", "similarity"} <= set(rows[0]):
        raise UserError(f"{path}: expected columns pair_id,similarity")
    dtypes = {"pair_id": int, "similarity": float, "same": lambda v: bool(int(v)), "threshold": float}
    return {col: np.array([dtypes[col](row[col]) for row in rows]) for col in rows[0] if col in dtypes}
