"""Input readers for prediction (what ``bin/predict.py input=`` may name) and the dataset that reads them.

A datamodule's ``predict_items`` picks the reader its task takes: single images, image pairs or consecutive
rows of a ``path`` CSV. CSV paths are relative to the CSV's folder or absolute."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.formats.boostcamp import find_eval_root, read_boostcamp_eval
from pipeline.data.formats.image_folder import csv_rows, visible_images
from pipeline.data.formats.verification import read_pairs_csv
from pipeline.data.io import is_image_file, list_images, load_image
from pipeline.utils.errors import UserError, require_path
from pipeline.utils.files import text_stream

log = logging.getLogger(__name__)

UNREADABLE = "unreadable"
NO_FACE = "no_face"  # the preprocessing found nothing to read (no face in the photo)


@dataclass
class PredictionInput:
    """One item: its image ``files`` by model input (``image``, or ``image1`` and ``image2``) and the
    ``identity`` columns naming it in the output (``path`` [+ ``image_id``], ``path1`` and ``path2``, ``pair_id``)."""

    files: dict[str, Path]
    identity: dict[str, Any]


def _in_csv(csv_path: Path, path: str) -> Path:
    candidate = Path(path.strip()).expanduser()
    return candidate if candidate.is_absolute() else csv_path.parent / candidate


def read_images(source: Path) -> list[PredictionInput]:
    """Images of a boostcamp eval folder (info.csv order, with their ``image_id``), a folder, one image or a
    ``path`` CSV."""
    source = require_path(source, "input")
    eval_root = find_eval_root(source)
    if eval_root is not None:
        return [PredictionInput({"image": r.path}, {"path": str(r.path), "image_id": r.image_id})
                for r in read_boostcamp_eval(eval_root)]
    if source.is_dir():
        paths = visible_images(source)
    elif source.suffix.lower() == ".csv":
        paths = [_in_csv(source, row["path"]) for _, row in csv_rows(source, ("path",))]
    elif is_image_file(source):
        paths = [source]
    else:
        raise UserError(f"input: '{source}' is not an image, a folder of images or a CSV with a 'path' column")
    if not paths:
        raise UserError(f"input: no images found in '{source}'")
    return [PredictionInput({"image": path}, {"path": str(path)}) for path in paths]


def read_pair_folders(root: Path) -> list[tuple[Path, Path]]:
    """Same-named images of the two sub-folders of ``root`` (same path inside each); the unpaired are skipped."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(folders) != 2:
        raise UserError(f"{root}: expected exactly two sub-folders of images to pair by file name, found {len(folders)}")
    sides = [{path.relative_to(folder): path for path in list_images(folder)} for folder in folders]
    common = sorted(sides[0].keys() & sides[1].keys())
    unpaired = len(sides[0]) + len(sides[1]) - 2 * len(common)
    if unpaired:
        log.warning("%s: %d image(s) have no same-named partner in the other folder and are skipped", root, unpaired)
    return [(sides[0][name], sides[1][name]) for name in common]


def read_image_pairs(source: Path) -> list[PredictionInput]:
    """Pairs of a ``path1,path2`` CSV (extra columns ignored) or of a folder with two sub-folders."""
    source = require_path(source, "input")
    if is_image_file(source):
        raise UserError(f"input: '{source}' is one image, and this model compares a pair: give a path1,path2 CSV or "
                        "a folder with two sub-folders of same-named images")
    if source.is_file():
        pairs = [tuple(require_path(_in_csv(source, row[key]), "input", "image") for key in ("path1", "path2"))
                 for _, row in csv_rows(source, ("path1", "path2"))]
    else:
        pairs = read_pair_folders(source)
    if not pairs:
        raise UserError(f"{source}: no image pairs found (give a path1,path2 CSV or a folder with two sub-folders)")
    return [PredictionInput({"image1": a, "image2": b}, {"path1": str(a), "path2": str(b)}) for a, b in pairs]


def has_columns(csv_path: Path, columns: Sequence[str]) -> bool:
    """Whether a readable CSV's header holds every one of ``columns``."""
    with text_stream(require_path(csv_path, "input")) as fh:
        return set(columns) <= {name.strip() for name in next(csv.reader(fh), [])}


def read_row_pairs(source: Path, path_column: str = "path") -> list[PredictionInput]:
    """Consecutive rows of a CSV as pairs, named by ``pair_id``."""
    source = require_path(source, "input")
    if source.suffix.lower() != ".csv":
        raise UserError(f"input: '{source}' is not a pairs CSV (consecutive rows with a '{path_column}' column form a pair)")
    files = [[require_path(_in_csv(source, row[path_column]), "input", "image") for row in pair]
             for pair in read_pairs_csv(source, path_column)]
    return [PredictionInput({"image1": a, "image2": b}, {"pair_id": i}) for i, (a, b) in enumerate(files)]


class PredictionDataset(Dataset):
    """The items of a reader with their model inputs from ``predict_item`` (the data's eval preprocessing).
    An image that cannot be used keeps its row: a blank input and a ``status`` (``unreadable``, ``no_face``)."""

    def __init__(self, items: list[PredictionInput], predict_item: Callable[[np.ndarray], dict[str, Any]],
                 input_size: Sequence[int]) -> None:
        self.items, self.predict_item = items, predict_item
        self.blank = predict_item(np.zeros((*input_size[-2:], 3), np.uint8))
        if self.blank["image"] is None:
            self.blank["image"] = torch.zeros(*input_size)

    def __len__(self) -> int:
        return len(self.items)

    def read(self, path: Path) -> tuple[dict[str, Any], str | None]:
        try:
            inputs = self.predict_item(load_image(path))
        except UserError as exc:
            log.warning("%s", exc)
            return dict(self.blank), UNREADABLE
        return (dict(self.blank), NO_FACE) if inputs["image"] is None else (inputs, None)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.items[index]
        out: dict[str, Any] = {"identity": item.identity, "status": None}
        for name, path in item.files.items():
            inputs, status = self.read(path)
            out["status"] = out["status"] or status
            out[name] = inputs.pop("image")
            out.update(inputs)
        return out

    @staticmethod
    def collate_fn(items: list[dict[str, Any]]) -> dict[str, Any]:
        """Tensors stacked; identities, statuses and per-image extras (a letterbox's scale) as lists."""
        batch = {key: [item[key] for item in items] for key in items[0]}
        return {key: torch.stack(values) if isinstance(values[0], torch.Tensor) else values for key, values in batch.items()}
