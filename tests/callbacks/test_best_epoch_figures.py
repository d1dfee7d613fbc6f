"""Validation figures are drawn after the epochs that improve the checkpoint's monitor, test figures always."""

from types import SimpleNamespace

import torch

from pipeline.callbacks.image_grid import BestEpochFigures


class Recorder(BestEpochFigures):
    def __init__(self) -> None:
        super().__init__("unused")
        self.drawn: list[tuple[str, int]] = []

    def draw(self, trainer, pl_module, stage, collected) -> None:
        self.drawn.append((stage, trainer.current_epoch))


def run_epochs(values, mode):
    callback = Recorder()
    trainer = SimpleNamespace(sanity_checking=True, current_epoch=0, callback_metrics={},
                              checkpoint_callback=SimpleNamespace(monitor="val/m", mode=mode))
    callback.on_validation_epoch_end(trainer, None)  # the sanity check draws nothing
    callback.on_validation_end(trainer, None)
    trainer.sanity_checking = False
    for epoch, value in enumerate(values):
        trainer.current_epoch = epoch
        trainer.callback_metrics = {"val/m": torch.tensor(value)}
        callback.on_validation_epoch_end(trainer, None)
        callback.on_validation_end(trainer, None)
    callback.on_test_epoch_end(trainer, None)
    return callback.drawn


def test_val_figures_follow_improvements_and_test_figures_always_drawn():
    assert run_epochs([0.5, 0.4, 0.6, 0.6, 0.7], "max") == [("val", 0), ("val", 2), ("val", 4), ("test", 4)]
    assert run_epochs([0.5, 0.4, 0.6], "min") == [("val", 0), ("val", 1), ("test", 2)]
    # a monitor that is not finite (yet) never hides the figures
    assert run_epochs([float("nan"), float("nan")], "max") == [("val", 0), ("val", 1), ("test", 1)]
