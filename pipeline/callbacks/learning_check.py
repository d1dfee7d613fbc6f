"""One-line warnings when a run has not learned: a detector with no boxes, a classifier stuck on one class."""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable

import lightning.pytorch as pl
import torch

log = logging.getLogger(__name__)


@runtime_checkable
class CountsDetections(Protocol):
    """A detection task: how many boxes (above its ``min_score``) its val metrics have seen this epoch."""

    def detections_seen(self, stage: str) -> int: ...


@runtime_checkable
class HasConfusion(Protocol):
    """A classifier: confusion matrices ``[true, predicted]`` of the current val/test epoch, by output."""

    def confusion_matrices(self) -> dict[str, tuple[torch.Tensor, list[str]]]: ...


def single_predicted_class(matrix: torch.Tensor, class_names: list[str]) -> str | None:
    """The class every image was predicted as, when truth holds 2+ classes; None otherwise."""
    predicted = matrix.sum(dim=0)
    present = matrix.sum(dim=1)
    if int((present > 0).sum()) < 2 or int((predicted > 0).sum()) != 1:
        return None
    return class_names[int(predicted.argmax())]


class LearningCheck(pl.Callback):
    """Checks the last validation epoch and, at the end of training, logs one warning with what to try
    when a detector emitted no box above ``model.min_score`` or a classifier predicted one class only."""

    def __init__(self) -> None:
        self.problem: str | None = None

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Callbacks' epoch-end hooks run before the module's, so the epoch's states are not reset yet.
        if trainer.sanity_checking:
            return
        self.problem = None
        if isinstance(pl_module, CountsDetections) and pl_module.detections_seen("val") == 0:
            self.problem = (
                f"the detector emitted no box above model.min_score on any val image after {trainer.current_epoch + 1} "
                "epoch(s); try more epochs (trainer.max_epochs), a larger data.image_size for small objects, or another "
                "hyp.optimizer.lr"
            )
        elif isinstance(pl_module, HasConfusion):
            for output, (matrix, names) in pl_module.confusion_matrices().items():
                stuck = single_predicted_class(matrix, names)
                if stuck is not None:
                    self.problem = (
                        f"the classifier predicts '{stuck}' for every val image ({output}); try more epochs "
                        "(trainer.max_epochs), another hyp.optimizer.lr, hyp=balanced or data.sampler=weighted"
                    )

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.problem and trainer.is_global_zero:
            log.warning("not learning: %s", self.problem)
