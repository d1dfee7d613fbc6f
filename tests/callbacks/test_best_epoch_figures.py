"""Validation figures are drawn after the epochs that improve the checkpoint's monitor, test figures always."""

from types import SimpleNamespace

import pytest
import torch

from pipeline.callbacks.figure_budget import FigureBudget, figure_budget
from pipeline.callbacks.image_grid import BestEpochFigures
from pipeline.utils import clock as pipeline_clock
from pipeline.utils.errors import UserError


class Recorder(BestEpochFigures):
    def __init__(self) -> None:
        super().__init__("unused")
        self.drawn: list[tuple[str, int]] = []

    def draw(self, trainer, pl_module, stage, collected) -> None:
        self.drawn.append((stage, trainer.current_epoch))


def run_epochs(values, mode):
    callback = Recorder()
    trainer = SimpleNamespace(sanity_checking=True, current_epoch=0, global_step=0, callback_metrics={},
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


class Clock:
    """A stand-in for ``time.perf_counter`` that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_budget_allows_figures_while_their_time_and_the_ends_redrawing_is_within_its_share(monkeypatch):
    clock = Clock()
    monkeypatch.setattr("pipeline.utils.clock.time.perf_counter", clock)
    budget = FigureBudget(share=0.1)
    assert budget.allows("a")  # outside training: always
    budget.on_train_start(None, None)
    clock.now += 4.0  # 4 s in: 0.1 x 4 s = 0.4 s < the 0.5 s taken for an undrawn kind
    assert not budget.allows("a")
    clock.now += 1.0  # 5 s: 0.5 s <= 0.5 s
    assert budget.allows("a")
    with budget.drawing("a"):
        clock.now += 1.0  # a 1 s figure: 1 s spent, and 1 s to draw it again at the end
    clock.now += 13.0  # 19 s: 2 s > 1.9 s
    assert not budget.allows("a")
    clock.now += 1.0  # 20 s: 2 s <= 2 s
    assert budget.allows("a")
    assert not budget.allows("b")  # a second kind reserves its 0.5 s too: 2.5 s > 2 s
    clock.now += 5.0  # 25 s: 2.5 s <= 2.5 s
    assert budget.allows("b")
    budget.on_train_end(None, None)
    with budget.drawing("a"):
        clock.now += 50.0
    assert budget.allows("a") and budget.allows("c")  # after training every figure is drawn


def test_time_the_process_was_paused_for_others_does_not_grow_the_budget(monkeypatch):
    """An interleaved benchmark side waits for the other sides' epochs (``clock.pause``): the budget is a share of the
    time this process ran, as when it trains alone, not of the wall time that includes the others' turns."""
    clock = Clock()
    monkeypatch.setattr("pipeline.utils.clock.time.perf_counter", clock)
    monkeypatch.setattr("pipeline.utils.clock._paused_s", 0.0)
    budget = FigureBudget(share=0.1)
    budget.on_train_start(None, None)
    clock.now += 4.0  # 4 s of training: 0.4 s < 0.5 s
    pipeline_clock.pause(30.0)
    clock.now += 30.0  # 34 s of wall time, 30 of them the others' turns
    assert not budget.allows("a")
    clock.now += 1.0  # 5 s of its own
    assert budget.allows("a")
    pipeline_clock.pause(-3.0)  # a negative pause is no pause
    assert pipeline_clock.now() == clock.now - 30.0


def test_share_one_draws_every_figure_and_no_budget_callback_allows_all(monkeypatch):
    budget = FigureBudget(share=1)
    budget.on_train_start(None, None)
    assert budget.allows("a")  # at once, even before any training time passed
    assert figure_budget(SimpleNamespace(callbacks=[])).allows("a")


def test_an_improvement_over_budget_is_drawn_when_training_ends_with_its_own_epoch():
    class Refusing(FigureBudget):
        def allows(self, kind: str) -> bool:
            return False

    callback = Recorder()
    trainer = SimpleNamespace(sanity_checking=False, current_epoch=0, global_step=0, callback_metrics={},
                              callbacks=[Refusing(), callback], checkpoint_callback=SimpleNamespace(monitor="val/m", mode="max"))
    callback.draw = lambda trainer, pl_module, stage, collected: callback.drawn.append((stage, callback.weights_of(trainer, stage)))
    for epoch, value in enumerate([0.5, 0.7, 0.6]):
        trainer.current_epoch, trainer.global_step = epoch, 10 * (epoch + 1)
        trainer.callback_metrics = {"val/m": torch.tensor(value)}
        callback.on_validation_epoch_end(trainer, None)
        callback.on_validation_end(trainer, None)
    assert callback.drawn == []  # every improvement over budget
    callback.on_train_end(trainer, None)
    assert callback.drawn == [("val", (1, 20))]  # the best epoch's, titled with its epoch and step, not the last one's
    callback.on_train_end(trainer, None)
    assert len(callback.drawn) == 1  # drawn once


def test_the_budget_share_is_checked():
    with pytest.raises(UserError, match="callbacks.figure_budget.share"):
        FigureBudget(share=0)


def test_results_png_waits_for_the_budget_and_is_drawn_when_training_ends(tmp_path):
    from pipeline.callbacks.results import Results

    class Refusing(FigureBudget):
        def allows(self, kind: str) -> bool:
            return False

    results = Results(tmp_path)
    trainer = SimpleNamespace(loggers=[], callbacks=[Refusing(), results], current_epoch=0, global_step=0,
                              callback_metrics={"train/loss_epoch": torch.tensor(1.0), "val/loss": torch.tensor(2.0)})
    for epoch in (1, 2):
        trainer.current_epoch, trainer.global_step = epoch, 5 * epoch
        results.on_train_epoch_start(trainer, None)
    assert (tmp_path / "results.csv").read_text().count("\n") == 3  # header and epochs 0, 1: written every epoch
    assert not (tmp_path / "results.png").exists()
    results.on_train_end(trainer, None)
    assert (tmp_path / "results.png").stat().st_size > 5_000
