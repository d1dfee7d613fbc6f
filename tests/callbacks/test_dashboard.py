"""The TensorBoard dashboards, read back with TensorBoard's own reader after a short run."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from conftest import compose_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.util import tensor_util

from pipeline.callbacks.confusion_matrix import short_labels
from pipeline.callbacks.dashboard import MAX_HPARAMS, curated_hparams, scalars_layout
from pipeline.callbacks.image_grid import annotated_grid, caption_width
from pipeline.callbacks.learning_rate import lr_tag
from pipeline.data.formats.boostcamp import CLASS_NAMES
from pipeline.trainers.engine import train
from pipeline.utils.tensorboard import shown_as_written
from pipeline.utils.trackers import tracker_name

TINY_BOOSTCAMP = ["experiment=mask_age_gender", "debug=limit", "data.synthetic.num_people=40",
                  "data.synthetic.image_size=[32,24]", "data.image_size=[32,24]", "hyp.batch_size=16"]


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, data_dir):
    run_dir = tmp_path_factory.mktemp("dash") / "run"
    cfg = compose_config(TINY_BOOSTCAMP, run_dir, data_dir)
    train(cfg)
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0, "images": 0, "scalars": 0})
    events.Reload()
    return run_dir, events


def test_custom_scalars_put_train_and_val_of_each_metric_on_one_chart(short_run):
    _, events = short_run
    tensor = events.Tensors("custom_scalars__config__")[-1].tensor_proto
    layout = layout_pb2.Layout.FromString(tensor_util.make_ndarray(tensor).item())
    charts = {chart.title: list(chart.multiline.tag) for category in layout.category for chart in category.chart}
    scalars = events.Tags()["scalars"]
    for name in ("loss", "acc", "f1"):
        matched = [tag for tag in scalars if any(re.match(rx, tag) for rx in charts[name])]
        assert sorted(matched) == sorted([f"train/{name}_epoch" if name == "loss" else f"train/{name}", f"val/{name}"])
    assert layout.category[0].chart[0].title == "loss"


def test_epoch_counter_is_not_a_scalar_and_hparams_are_curated(short_run):
    run_dir, events = short_run
    assert "epoch" not in events.Tags()["scalars"]
    start = plugin_data_pb2.HParamsPluginData.FromString(
        events.SummaryMetadata("_hparams_/session_start_info").plugin_data.content).session_start_info
    hparams = {key: value.ListFields()[0][1] for key, value in start.hparams.items()}
    assert len(hparams) < 30
    assert hparams["lr"] == pytest.approx(3e-3) and hparams["backbone"] == "face_cnn"
    assert hparams["image_size"] == "32x24" and hparams["experiment"] == "mask_age_gender"
    # Integers as written (HPARAMS prints numbers as 16.000), and where the data came from.
    assert hparams["batch_size"] == "16" and hparams["seed"].isdigit()
    assert hparams["data_root"] == "synthetic"  # data.root: null
    experiment = plugin_data_pb2.HParamsPluginData.FromString(
        events.SummaryMetadata("_hparams_/experiment").plugin_data.content).experiment
    metric_tags = {info.name.tag for info in experiment.metric_infos}
    # TensorBoard's table shows the hyperparameters flagged "differs" first (and only five at first).
    assert {"lr", "backbone", "data_root"} <= {info.name for info in experiment.hparam_infos if info.differs}
    assert {"val/best_f1", "val/best_epoch", "z_test/f1", "z_test/loss"} <= metric_tags
    history = json.loads((run_dir / "results" / "metrics_history.json").read_text())
    best = max(history, key=lambda row: (row["val/f1"], -row["epoch"]))
    assert events.Scalars("val/best_epoch")[-1].value == best["epoch"]
    assert events.Scalars("val/best_f1")[-1].value == pytest.approx(best["val/f1"])
    # The HPARAMS metrics add no Time Series group of their own, and test figures are written once.
    assert not any(tag.startswith("hp/") for tag in events.Tags()["scalars"])
    assert len(events.Scalars("z_test/f1")) == 1
    assert (run_dir / "results" / "report.md").is_file() and (run_dir / "results" / "curves.png").is_file()


def test_grid_and_confusion_images_are_logged(short_run):
    _, events = short_run
    images = events.Tags()["images"]
    assert {"val/predictions", "z_test/predictions", "val/confusion_label", "z_test/confusion_label"} <= set(images)


def test_time_series_opens_on_train_and_val(short_run):
    """TensorBoard's Time Series shows its groups (the part of a tag before the first "/") in the order of their
    first tag, sorted with '/' and digits before letters: train, then val, then the test group and nothing before."""
    _, events = short_run
    tags = events.Tags()
    every = set(tags["scalars"]) | set(tags["images"])  # what Time Series shows (PR curves are not there)
    groups = list(dict.fromkeys(tag.split("/", 1)[0] for tag in sorted(every, key=lambda t: t.replace("/", "\x00"))))
    assert groups[:2] == ["train", "val"] and "z_test" in groups, groups
    assert "train/lr" in tags["scalars"] and not any(tag.startswith(("lr-", "test/", "throughput/")) for tag in every)


def test_curated_hparams_keep_what_a_sweep_varies_and_drop_paths(tmp_path):
    overrides = ["hyp.optimizer.lr=0.01", "hyp/loss=focal", "data.sampler=weighted", "data.num_workers=0",
                 "data.root=/photos/masks"]
    cfg = compose_config(["experiment=mask_age_gender", *overrides], tmp_path)
    params = curated_hparams(cfg, [*overrides, "paths.results_dir=/x"])
    assert params["data_root"] == "/photos/masks" and "data.root" not in params
    assert params["lr"] == 0.01 and params["loss"] == "FocalLoss" and params["hyp/loss"] == "focal"
    assert params["data.sampler"] == "weighted"
    assert not any(key.startswith("paths") or key == "data.num_workers" for key in params)
    assert "hyp.optimizer.lr" not in params and len(params) <= MAX_HPARAMS


def test_hparams_show_integers_as_written():
    shown = shown_as_written({"batch_size": 16, "lr": 0.003, "pretrained": True, "backbone": "resnet18"})
    assert shown == {"batch_size": "16", "lr": 0.003, "pretrained": True, "backbone": "resnet18"}


def test_learning_rate_is_logged_under_train():
    assert lr_tag("lr-AdamW") == "train/lr" and lr_tag("lr-AdamW/pg2") == "train/lr_pg2"
    assert lr_tag("lr-SGD", optimizers=2) == "train/lr_SGD" and lr_tag("val/loss") == "val/loss"


def test_trackers_file_test_figures_after_train_and_val():
    assert tracker_name("test/acc") == "z_test/acc" and tracker_name("val/acc") == "val/acc"
    assert tracker_name("test/ap50/with_mask") == "z_test/ap50/with_mask" and tracker_name("epoch") == "epoch"
    assert sorted(["z_test/acc", "val/acc", "train/acc"]) == ["train/acc", "val/acc", "z_test/acc"]


def test_layout_skips_step_values_and_puts_loss_first():
    layout = scalars_layout(["train/loss_step", "train/loss_epoch", "val/loss", "train/acc", "val/acc", "train/lr"])
    assert list(layout["train vs val"]) == ["loss", "acc"]
    assert list(layout["optimisation and speed"]) == ["train/lr"]
    layout = scalars_layout(["val/loss", "train/speed/step_ms", "train/lr_pg2"])
    assert list(layout["optimisation and speed"]) == ["train/lr_pg2", "train/speed/step_ms"]
    assert list(layout["train vs val"]) == ["loss"]


def test_grid_tiles_are_wide_enough_for_truth_and_prediction():
    text = f"true {CLASS_NAMES[16]}\npred {CLASS_NAMES[17]} 0.42"
    grid = annotated_grid(torch.zeros(2, 3, 24, 32, dtype=torch.uint8), [(text, False), ("true a\npred a", True)])
    tile_width = (grid.shape[2] - 3 * 4) // 2  # two tiles, padding 4 around each
    assert tile_width >= caption_width(text) + 8
    assert grid.shape[2] > 2 * 128


def test_confusion_labels_are_short_and_unique():
    labels = short_labels(list(CLASS_NAMES))
    assert len(set(labels)) == 18 and max(map(len, labels)) <= 10
    assert labels[15] == "NW/F/<30"
    assert np.array_equal(short_labels(["cat", "dog"]), ["cat", "dog"])


def test_report_curves_leave_out_the_learning_rate_and_speed(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    from pipeline.callbacks.run_report import read_curves

    with SummaryWriter(tmp_path) as writer:
        for step, (name, value) in enumerate([("train/loss_epoch", 1.0), ("val/loss", 0.9), ("train/lr", 1e-3),
                                              ("train/speed/samples_per_sec", 50.0), ("z_test/loss", 0.8)]):
            writer.add_scalar(name, value, step)
    assert read_curves(tmp_path) == {"loss": {"train": [(0, 1.0)], "val": [(1, pytest.approx(0.9))]}}
