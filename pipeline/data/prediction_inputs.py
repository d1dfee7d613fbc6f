"""Input readers for prediction (what ``bin/predict.py input=`` may name) and the dataset that reads them.

A datamodule's ``predict_items`` picks the reader its task takes: single images (``read_images``), image
pairs (``read_image_pairs``) or consecutive rows of a ``path`` CSV (``read_row_pairs``).
"""

from __future__ import annotations

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
from pipeline.data.formats.pairs import read_pairs
from pipeline.data.formats.verification import read_pairs_csv
from pipeline.data.io import is_image_file, load_image
from pipeline.utils.errors import UserError, require_path

log = logging.getLogger(__name__)

UNREADABLE = "unreadable"
NO_FACE = "no_face"  # the preprocessing found nothing to read (no face in the photo)


@dataclass
class PredictionInput:
    """One item to predict: its image files by model input name (``image``, or ``image1`` and ``image2``)
    and the ``identity`` columns that name it in the output (``path`` and ``image_id``, ``path1`` and
    ``path2``, or ``pair_id``)."""

    files: dict[str, Path]
    identity: dict[str, Any]


def _relative_to(base: Path, path: str) -> Path:
    candidate = Path(path.strip()).expanduser()
    return candidate if candidate.is_absolute() else base / candidate


def read_images(source: Path) -> list[PredictionInput]:
    """Images of a boostcamp eval folder (info.csv order, with their ``image_id``), a folder, one image or a
    ``path`` CSV (paths relative to its folder)."""
    source = require_path(source, "input")
    eval_root = find_eval_root(source)
    if eval_root is not None:
        return [PredictionInput({"image": r.path}, {"path": str(r.path), "image_id": r.image_id})
                for r in read_boostcamp_eval(eval_root)]
    if source.is_dir():
        paths = visible_images(source)
    elif source.suffix.lower() == ".csv":
        paths = [_relative_to(source.parent, row["path"]) for _, row in csv_rows(source, ("path",))]
    elif is_image_file(source):
        paths = [source]
    else:
        raise UserError(f"input: '{source}' is not an image, a folder of images or a CSV with a 'path' column")
    if not paths:
        raise UserError(f"input: no images found in '{source}'")
    return [PredictionInput({"image": path}, {"path": str(path)}) for path in paths]


def read_image_pairs(source: Path) -> list[PredictionInput]:
    """Pairs of a ``path1,path2`` CSV or of a folder with two sub-folders paired by file name."""
    return [PredictionInput({"image1": a, "image2": b}, {"path1": str(a), "path2": str(b)}) for a, b in read_pairs(source)]


def read_row_pairs(source: Path, path_column: str = "path") -> list[PredictionInput]:
    """Consecutive rows of a CSV as pairs, named by ``pair_id`` (``path_column`` relative to the CSV's folder)."""
    source = require_path(source, "input")
    if source.suffix.lower() != ".csv":
        raise UserError(f"input: '{source}' is not a pairs CSV (consecutive rows with a '{path_column}' column form a pair)")
    files = [[require_path(_relative_to(source.parent, row[path_column]), "input") for row in pair]
             for pair in read_pairs_csv(source, path_column)]
    return [PredictionInput({"image1": a, "image2": b}, {"pair_id": i}) for i, (a, b) in enumerate(files)]


class PredictionDataset(Dataset):
    """The items of a reader, each image read and turned into model inputs by ``predict_item`` (the data's
    eval preprocessing), with its ``identity``.

    An image that cannot be used keeps its place with a ``status`` (``unreadable``, or ``no_face`` when
    ``predict_item`` finds nothing to read) and a blank input, so the output still has its row.
    """

    def __init__(self, items: list[PredictionInput], predict_item: Callable[[np.ndarray], dict[str, Any]],
                 input_size: Sequence[int]) -> None:
        self.items = items
        self.predict_item = predict_item
        self.blank = predict_item(np.zeros((*input_size[-2:], 3), np.uint8))
        if self.blank["image"] is None:
            self.blank["image"] = torch.zeros(*input_size)

    def __len__(self) -> int:
        return len(self.items)

    def read(self, path: Path) -> tuple[dict[str, Any], str | None]:
        """The model inputs of one file and None, or the blank inputs and why the file cannot be used."""
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
