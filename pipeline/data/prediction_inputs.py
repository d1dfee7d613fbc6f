"""Input readers for prediction: what ``bin/predict.py input=`` may name, as a list of image paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.data.formats.boostcamp import find_eval_root, read_boostcamp_eval
from pipeline.data.formats.image_folder import csv_rows, visible_images
from pipeline.data.io import is_image_file
from pipeline.utils.errors import UserError, require_path


@dataclass
class PredictionInputs:
    """Image paths to classify; ``image_ids`` is set when they come from a boostcamp eval folder."""

    paths: list[Path]
    image_ids: list[str] | None = None


def prediction_inputs(source: Path) -> PredictionInputs:
    """Images of a boostcamp eval folder (in info.csv order), a folder, a single image or a ``path`` CSV."""
    source = require_path(source, "input")
    eval_root = find_eval_root(source)
    if eval_root is not None:
        records = read_boostcamp_eval(eval_root)
        return PredictionInputs([r.path for r in records], [r.image_id for r in records])
    if source.is_dir():
        paths = visible_images(source)
    elif source.suffix.lower() == ".csv":
        paths = [Path(row["path"]) if Path(row["path"]).is_absolute() else source.parent / row["path"]
                 for _, row in csv_rows(source, ("path",))]
    elif is_image_file(source):
        paths = [source]
    else:
        raise UserError(f"input: '{source}' is not an image, a folder of images or a CSV with a 'path' column")
    if not paths:
        raise UserError(f"input: no images found in '{source}'")
    return PredictionInputs(paths)
