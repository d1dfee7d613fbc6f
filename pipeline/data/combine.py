"""Dataset rules a task reaches through ``data_info["combine"]``: heads recombined into the dataset's
classes, and the dataset's own submission file. Tasks name the rule, never the dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from pipeline.data.formats.boostcamp import CLASS_NAMES, combine_mask_gender_age, write_submission

# rule -> (heads it needs, function turning their probabilities into the dataset's classes)
COMBINERS: dict[str, tuple[tuple[str, ...], Callable[[dict[str, torch.Tensor]], torch.Tensor]]] = {
    "boostcamp": (("mask", "gender", "age"), combine_mask_gender_age),
}
# the dataset's classes -> writer of its submission file (out_dir, image ids, class indices) -> file
SUBMISSIONS: dict[tuple[str, ...], Callable[[Path, list[str], list[int]], Path]] = {
    tuple(CLASS_NAMES): write_submission,
}


def submission_writer(class_names: list[str]) -> Callable[[Path, list[str], list[int]], Path] | None:
    """The submission writer of the dataset whose classes these are, or None."""
    return SUBMISSIONS.get(tuple(class_names))
