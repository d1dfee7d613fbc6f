"""Generic labelled-image reader for users' own data: class folders or a ``path,label`` CSV.

Class folders::

    root/<class name>/**/*.jpg|png|...      class names sorted; hidden files, dot-folders and non-images ignored

Pre-split class folders (torchvision's ImageFolder per split, timm's ``train/`` + ``validation/``)::

    root/train/<class name>/*   root/val|valid|validation/<class name>/*   root/test/<class name>/* (optional)

CSV (``path,label`` header; a ``split`` column assigns train/val/test; other columns, e.g. a person
id for ``data.group_by``, are kept on the record)::

    path,label
    cats/001.jpg,cat          # relative to the CSV's folder, or absolute
    /data/dogs/7.png,1        # a class name or a class index

All return ``(records, class_names)``; record labels index into ``class_names``, ``split`` is the
split a pre-split layout or CSV gives the record (None otherwise).
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

from pipeline.data.io import list_images, load_image
from pipeline.data.splits import canonical_split, presplit_folders
from pipeline.utils.errors import UserError, require_path
from pipeline.utils.files import text_stream

log = logging.getLogger(__name__)

RecordT = TypeVar("RecordT")


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image."""

    path: Path
    label: int
    split: str | None = None
    columns: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


def read_image_folder(
    root: str | Path,
    class_names: Sequence[str] | None = None,
    allow_empty_classes: bool = False,
) -> tuple[list[ImageRecord], list[str]]:
    """Records from ``root/<class>/`` folders; ``class_names`` fixes the classes and their order."""
    root = require_path(root, "data.root", kind="folder")
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if class_names is None:
        class_names = folders
        if not class_names:
            raise UserError(f"{root}: no class folders found (expected {root}/<class name>/<images>)")
    else:
        extra = sorted(set(folders) - set(class_names))
        if extra:
            raise UserError(f"{root / extra[0]}: folder is not one of the class names {list(class_names)}")
    records = []
    for label, name in enumerate(class_names):
        folder = root / name
        images = visible_images(folder) if folder.is_dir() else []
        if not images and not allow_empty_classes:
            raise UserError(f"{folder}: class '{name}' has no images (add images or remove the class)")
        records.extend(ImageRecord(path, label) for path in images)
    return records, list(class_names)


def visible_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder``, leaving out hidden files and folders (``._x.jpg`` macOS companions)."""
    folder = Path(folder)
    return [p for p in list_images(folder) if not any(part.startswith(".") for part in p.relative_to(folder).parts)]


def read_image_csv(
    csv_path: str | Path, class_names: Sequence[str] | None = None, skip_bad_files: bool = False
) -> tuple[list[ImageRecord], list[str]]:
    """Records from a ``path,label`` CSV; labels are class names or indices. A row with an empty or missing label
    cell is a UserError naming the file and row, or is skipped (and counted in the log) with ``skip_bad_files``."""
    csv_path = require_path(csv_path, "data.csv", kind="file")
    rows = [(f"{csv_path}:{line}", row) for line, row in csv_rows(csv_path, ("path", "label"))]
    unlabelled = [where for where, row in rows if not row.get("label")]
    if unlabelled and not skip_bad_files:
        raise UserError(f"{unlabelled[0]}: empty label cell ({len(unlabelled)} row(s) without a label; fill them, "
                        "or set data.skip_bad_files=true to skip them)")
    if unlabelled:
        log.warning("%s: %d row(s) with an empty label cell skipped (first: %s)", csv_path, len(unlabelled), unlabelled[0])
        rows = [(where, row) for where, row in rows if row.get("label")]
    if not rows:
        raise UserError(f"{csv_path}: no rows (expected a header 'path,label' and one row per image)")
    if class_names is None:
        class_names = _infer_class_names([row["label"] for _, row in rows])
    class_names = list(class_names)
    records = []
    for where, row in rows:
        path = row["path"]
        image = Path(path) if Path(path).is_absolute() else csv_path.parent / path
        if not image.is_file():
            raise UserError(f"{where}: image '{image}' does not exist")
        split = canonical_split(row["split"], where) if row.get("split") else None
        records.append(ImageRecord(image, _label_index(row["label"], class_names, where), split, row))
    if any(r.split for r in records) and not all(r.split for r in records):
        raise UserError(f"{csv_path}: the 'split' column is empty on some rows; fill it on every row or drop it")
    return records, class_names


def csv_rows(csv_path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row with stripped values) for each data row; UserError if a column is missing."""
    with text_stream(csv_path) as f:
        reader = csv.DictReader(f)
        columns = [c.strip() for c in reader.fieldnames or []]
        missing = [c for c in required if c not in columns]
        if missing:
            raise UserError(f"{csv_path}: missing column(s) {missing} (found {columns})")
        for row in reader:
            values = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            yield reader.line_num, values


def _infer_class_names(labels: list[str]) -> list[str]:
    """'0'..'n-1' when every label is an index, else the sorted distinct label strings."""
    if all(label.isdigit() for label in labels):
        return [str(i) for i in range(max(int(label) for label in labels) + 1)]
    return sorted(set(labels))


def _label_index(label: str, class_names: list[str], where: str) -> int:
    if label in class_names:
        return class_names.index(label)
    if label.isdigit() and int(label) < len(class_names):
        return int(label)
    raise UserError(f"{where}: label '{label}' is not a class name or index of {class_names}")


def read_labelled_images(
    source: str | Path,
    class_names: Sequence[str] | None = None,
    allow_empty_classes: bool = False,
    skip_bad_files: bool = False,
) -> tuple[list[ImageRecord], list[str]]:
    """Read a ``.csv`` file with ``read_image_csv``, pre-split class folders with
    ``read_presplit_folders``, anything else with ``read_image_folder``."""
    if Path(source).suffix.lower() == ".csv":
        return read_image_csv(source, class_names, skip_bad_files)
    folders = presplit_folders(require_path(source, "data.root", kind="folder"))
    if folders is not None:
        return read_presplit_folders(folders, class_names)
    return read_image_folder(source, class_names, allow_empty_classes)


def read_presplit_folders(
    folders: dict[str, Path], class_names: Sequence[str] | None = None
) -> tuple[list[ImageRecord], list[str]]:
    """Records of ``<split>/<class>/`` folders, each carrying its split; classes are the union of the
    class folders (sorted) unless ``class_names`` fixes them."""
    if class_names is None:
        class_names = sorted({p.name for folder in folders.values() for p in folder.iterdir()
                              if p.is_dir() and not p.name.startswith(".")})
        if not class_names:
            raise UserError(f"{folders['train']}: no class folders found (expected train/<class name>/<images>)")
    records = []
    for split, folder in folders.items():
        found, _ = read_image_folder(folder, class_names, allow_empty_classes=True)
        records.extend(replace(record, split=split) for record in found)
    trained = {r.label for r in records if r.split == "train"}
    for label, name in enumerate(class_names):
        if label not in trained:
            raise UserError(f"{folders['train'] / name}: class '{name}' has no training images")
    log.info("pre-split class folders: %s", ", ".join(f"{s} {sum(r.split == s for r in records)}" for s in folders))
    return records, list(class_names)


def drop_unreadable(records: Sequence[RecordT], skip_bad_files: bool = False) -> list[RecordT]:
    """Decode every record's ``path``; a corrupt file raises UserError naming it, or is dropped and counted."""
    kept = []
    for record in records:
        try:
            load_image(record.path)
        except UserError as exc:
            if not skip_bad_files:
                raise
            log.warning("skipping unreadable image: %s", exc)
            continue
        kept.append(record)
    if len(kept) < len(records):
        log.warning("skipped %d unreadable image(s) of %d", len(records) - len(kept), len(records))
    return kept
