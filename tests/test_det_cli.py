"""facemask_detection from the command line: run folder, split file, TensorBoard tags, bin/test.py, split reuse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

TINY = ["experiment=facemask_detection", "data.image_size=96", "data.synthetic.num_images=40",
        "data.synthetic.image_size=96", "data.num_workers=0", "hyp.batch_size=4", "trainer.max_epochs=2",
        "+trainer.limit_train_batches=4", "trainer.log_every_n_steps=1"]


@pytest.fixture(scope="module")
def trained_run(module_tmp):
    tmp = module_tmp
    proc = run_cli("train.py", *TINY, f"paths.results_dir={tmp / 'results'}", f"paths.data_dir={tmp / 'data'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp / "results" / "facemask_detection").iterdir()
    return tmp, run


@pytest.mark.slow
def test_run_folder_holds_split_metrics_and_images(trained_run):
    _, run = trained_run
    split = json.loads((run / "results" / "split.json").read_text())
    assert sum(len(v) for v in split.values()) == 40
    metrics = json.loads((run / "results" / "test_metrics.json").read_text())
    assert {"test/map", "test/map_50", "test/ap/mask_weared_incorrect", "test/f1"} <= set(metrics)
    for name in ("val_predictions.png", "test_predictions.png"):
        assert (run / "results" / name).is_file(), name
    history = json.loads((run / "results" / "metrics_history.json").read_text())
    assert [row["epoch"] for row in history] == [0, 1] and all("val/map_50" in row for row in history)
    scalars, images = set(), set()
    for event_file in (run / "tensorboard").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(event_file), size_guidance={"images": 0, "scalars": 0}).Reload()
        scalars |= set(acc.Tags()["scalars"])
        images |= set(acc.Tags()["images"])
    assert {"train/loss_classification_step", "train/loss_bbox_ctrness_epoch", "val/map_50", "val/ap/with_mask"} <= scalars
    assert {"val/predictions", "z_test/predictions"} <= images  # the trackers' test group sorts after train and val


@pytest.mark.slow
def test_detection_report_files(trained_run):
    """The per-class table (CSV, report.md), PR and F1 curves, confusion matrix and the saved best threshold;
    the table's AP50 of each present class is the test metric's own (torchmetrics, faster-coco-eval backend)."""
    import csv

    _, run = trained_run
    results = run / "results"
    for name in ("test_pr_curves.png", "test_f1_threshold.png", "test_detection_confusion.png", "results.csv", "results.png"):
        assert (results / name).stat().st_size > 1000, name
    with (results / "per_class_report.csv").open(newline="") as file:
        rows = {row["class"]: row for row in csv.DictReader(file)}
    metrics = json.loads((results / "test_metrics.json").read_text())
    for name in ("with_mask", "without_mask", "mask_weared_incorrect"):
        if rows[name]["ap50"] == "absent":
            assert int(rows[name]["instances"]) == 0
        else:
            assert float(rows[name]["ap50"]) == pytest.approx(metrics[f"test/ap50/{name}"], abs=1e-3)
    assert "| class |" in (results / "report.md").read_text()
    threshold = json.loads((results / "detection_threshold.json").read_text())
    assert 0 <= threshold["score_threshold"] <= 1
    # The tested checkpoint's epoch, as its file name says, in the record and the figures' titles.
    assert Path(threshold["checkpoint"]).name == f"epoch{threshold['epoch']:03d}.ckpt"
    assert Image.open(results / "test_pr_curves.png").info["Title"].startswith(
        f"Precision-recall at IoU 0.5 (test, epoch {threshold['epoch']})")


@pytest.mark.slow
def test_bin_test_and_split_reuse(trained_run):
    tmp, run = trained_run
    proc = run_cli("test.py", f"run={run}", "data.num_workers=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = json.loads((run / "results" / "test_metrics.json").read_text())
    assert 0 <= written["test/map_50"] <= 1 and "map_50" in proc.stdout  # the file, and the final table's row
    split_file = run / "results" / "split.json"
    proc = run_cli("train.py", *TINY, "trainer.max_epochs=1", "seed=7", f"data.split_file={split_file}", "test_after_train=false",
                   f"paths.results_dir={tmp / 'reuse'}", f"paths.data_dir={tmp / 'data'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (second,) = (tmp / "reuse" / "facemask_detection").iterdir()
    assert json.loads((second / "results" / "split.json").read_text()) == json.loads(split_file.read_text())


@pytest.mark.slow
def test_predict_with_the_saved_best_threshold(trained_run, tmp_path):
    """``options.score_threshold=best`` (and the default) keeps the boxes at or above the run's saved best-F1
    threshold, as a lower threshold's answer cut there; a run without it stops in one line."""
    import csv
    import shutil

    from conftest import one_line_error, run_main

    tmp, run = trained_run
    best = json.loads((run / "results" / "detection_threshold.json").read_text())["score_threshold"]
    images = sorted(p for p in (tmp / "data").rglob("*") if p.suffix.lower() in (".png", ".jpg"))[:4]
    inputs = tmp_path / "in"
    inputs.mkdir()
    for image in images:
        shutil.copy(image, inputs / image.name)

    def scores(*options: str) -> list[tuple[str, float]]:
        out = tmp_path / "_".join(options or ("default",)).replace("=", "-")
        proc = run_main("predict.py", f"run={run}", f"input={inputs}", f"out={out}", "options.draw=false", *options)
        assert proc.returncode == 0, proc.stderr[-3000:]
        with (out / "detections.csv").open(newline="") as file:
            return [(row["path"], float(row["score"])) for row in csv.DictReader(file)]

    low = scores("options.score_threshold=0")
    assert scores("options.score_threshold=best") == scores() == [row for row in low if row[1] >= best - 5e-5]
    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("tensorboard", "tests", "predictions"))
    (copy / "results" / "detection_threshold.json").unlink()
    proc = run_main("predict.py", f"run={copy}", f"input={inputs}", f"out={tmp_path / 'none'}", "options.score_threshold=best")
    one_line_error(proc, "score_threshold=best", "detection_threshold.json")
