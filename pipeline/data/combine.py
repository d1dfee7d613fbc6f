"""Dataset rules a task reaches through ``DataInfo.combine``: heads recombined into the dataset's
classes, and the dataset's own submission file. Tasks name the rule, never the dataset."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from pipeline.data.formats.boostcamp import CLASS_NAMES, combine_mask_gender_age, write_submission
from pipeline.utils.contracts import DataInfo
from pipeline.utils.errors import UserError

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


def combine_runs(probabilities: dict[str, torch.Tensor], data_info: DataInfo) -> tuple[torch.Tensor, list[str]]:
    """The dataset's class probabilities and names from heads that separate runs predict (``run=[a,b,c]``),
    by the ``combine`` rule of their data."""
    rule = data_info.combine
    if rule not in COMBINERS:
        raise UserError(f"run: these runs' data has no combine rule (got {rule!r}); see pipeline/data/combine.py")
    needed = COMBINERS[rule][0]
    missing = [name for name in needed if name not in probabilities]
    if missing:
        raise UserError(f"run: no run predicts {missing} (train them with data.target=<{'|'.join(needed)}>)")
    return COMBINERS[rule][1](probabilities), list(data_info.combine_class_names or data_info.class_names)
