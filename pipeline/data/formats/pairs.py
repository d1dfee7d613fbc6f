"""Image pairs to compare: a ``path1,path2`` CSV or a folder with two sub-folders paired by file name.

CSV paths are relative to the CSV's folder or absolute; extra columns are ignored. In the folder
form, ``root/<a>/x.jpg`` is paired with ``root/<b>/x.jpg`` (same path inside each sub-folder);
files present on one side only are skipped with a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pipeline.data.formats.image_folder import csv_rows
from pipeline.data.io import list_images
from pipeline.utils.errors import UserError, require_path

log = logging.getLogger(__name__)

Pair = tuple[Path, Path]


def read_pair_csv(csv_path: Path) -> list[Pair]:
    """Pairs from a CSV with ``path1,path2`` columns."""
    pairs = []
    for line, row in csv_rows(csv_path, ("path1", "path2")):
        paths = [Path(row[key]) if Path(row[key]).is_absolute() else csv_path.parent / row[key] for key in ("path1", "path2")]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise UserError(f"{csv_path}:{line}: image '{missing[0]}' does not exist")
        pairs.append((paths[0], paths[1]))
    return pairs


def read_pair_folders(root: Path) -> list[Pair]:
    """Pairs of same-named images from the two sub-folders of ``root``."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) != 2:
        raise UserError(f"{root}: expected exactly two sub-folders of images to pair by file name, found {len(folders)}")
    sides = [{path.relative_to(folder): path for path in list_images(folder)} for folder in folders]
    common = sorted(sides[0].keys() & sides[1].keys())
    unpaired = len(sides[0]) + len(sides[1]) - 2 * len(common)
    if unpaired:
        log.warning("%s: %d image(s) have no same-named partner in the other folder and are skipped", root, unpaired)
    return [(sides[0][name], sides[1][name]) for name in common]


def read_pairs(source: str | Path) -> list[Pair]:
    """Image pairs from a ``path1,path2`` CSV or a folder of two sub-folders; UserError when there are none."""
    source = require_path(source, "input")
    pairs = read_pair_csv(source) if source.is_file() else read_pair_folders(source)
    if not pairs:
        raise UserError(f"{source}: no image pairs found (give a path1,path2 CSV or a folder with two sub-folders)")
    return pairs
