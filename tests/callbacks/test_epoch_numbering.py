"""One epoch numbering (Lightning's 0-based ``current_epoch``, as in ``epoch002.ckpt``): the best checkpoint's name
and ``epoch`` key, the figures' titles and TensorBoard steps, ``report.md``, ``metrics_history.json`` and
``results.csv`` name the same epoch, after training and in a re-test of the checkpoint."""

from __future__ import annotations

import csv
import json

import lightning.pytorch as pl
import pytest
import torch
from conftest import compose_config
from lightning.pytorch.loggers import CSVLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pipeline.callbacks.confusion_matrix import ConfusionMatrix
from pipeline.runs.run import build_datamodule, build_task
from pipeline.runs.table import best_row
from pipeline.trainers.engine import train

TINY = ["experiment=mask_age_gender", "debug=limit", "trainer.max_epochs=3", "data.synthetic.num_people=40",
        "data.synthetic.image_size=[32,24]", "data.image_size=[32,24]", "hyp.batch_size=16"]


def title(path) -> str:
    return Image.open(path).info["Title"]


@pytest.fixture(scope="module")
def run(module_tmp, data_dir):
    run_dir = module_tmp / "run"
    cfg = compose_config(TINY, run_dir, data_dir)
    train(cfg)
    [best] = (run_dir / "checkpoints").glob("epoch*.ckpt")
    return cfg, run_dir, best, torch.load(best, map_location="cpu", weights_only=False)


def test_checkpoint_figures_report_and_history_name_one_best_epoch(run):
    cfg, run_dir, best, checkpoint = run
    results = run_dir / "results"
    epoch = int(best.stem.removeprefix("epoch"))
    assert checkpoint["epoch"] == epoch
    history = json.loads((results / "metrics_history.json").read_text())
    assert [row["epoch"] for row in history] == [0, 1, 2]
    assert best_row(history, cfg.task.monitor, cfg.task.monitor_mode)["epoch"] == epoch
    with (results / "results.csv").open() as file:
        assert [int(row["epoch"]) for row in csv.DictReader(file)] == [0, 1, 2]
    # Validation figures are drawn at the improving epochs, so the last ones show the best epoch, as test's do.
    for stage in ("val", "test"):
        assert title(results / f"{stage}_confusion_label.png") == f"{stage} label (epoch {epoch})"
        assert title(results / f"{stage}_predictions.png") == f"{stage} predictions (epoch {epoch})"
    report = (results / "report.md").read_text()
    assert f"at epoch {epoch}; tested: epoch {epoch}, `{best.name}`." in report
    assert f"| metric | val, best epoch {epoch} | test, epoch {epoch}, `{best.name}` |" in report
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    for tag in ("val/confusion_label", "z_test/confusion_label", "z_test/predictions"):
        assert events.Images(tag)[-1].step == checkpoint["global_step"], tag
    assert [e.step for e in events.Scalars("z_test/f1")] == [checkpoint["global_step"]]
    with next((run_dir / "csv").rglob("metrics.csv")).open() as file:
        assert {float(row["epoch"]) for row in csv.DictReader(file) if row.get("z_test/f1")} == {epoch}


def test_pr_and_roc_curves_show_the_best_epoch_in_results_and_tensorboard(run):
    _, run_dir, _, checkpoint = run
    for stage in ("val", "test"):
        assert title(run_dir / "results" / f"{stage}_pr_roc_curves.png") == f"{stage} (epoch {checkpoint['epoch']})"
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0, "images": 0})
    events.Reload()
    tags = [tag for tag in events.Tags()["tensors"] if tag.startswith("z_test/pr_curve/")]
    assert tags and all(events.Tensors(tag)[-1].step == checkpoint["global_step"] for tag in tags)
    assert events.Images("z_test/pr_roc_curves")[-1].step == checkpoint["global_step"]


def test_a_retest_titles_its_figures_with_the_tested_checkpoints_epoch(run, tmp_path):
    cfg, _, best, checkpoint = run
    datamodule = build_datamodule(cfg)
    trainer = pl.Trainer(logger=CSVLogger(tmp_path), callbacks=[ConfusionMatrix(tmp_path)], limit_test_batches=2,
                         default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False)
    trainer.test(build_task(cfg, datamodule.info), datamodule=datamodule, ckpt_path=str(best), weights_only=True)
    assert trainer.current_epoch == 0  # a test restores the weights, not the trainer's epoch counter
    assert title(tmp_path / "test_confusion_label.png") == f"test label (epoch {checkpoint['epoch']})"
    with next(tmp_path.rglob("metrics.csv")).open() as file:
        [row] = [row for row in csv.DictReader(file) if row.get("test/f1")]
    assert (float(row["epoch"]), int(row["step"])) == (checkpoint["epoch"], checkpoint["global_step"])
