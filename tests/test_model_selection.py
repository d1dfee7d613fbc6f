"""Model selection that cannot silently fail: the monitor guard, the verification eer_real fallback,
the not-learning warnings, and unmet split fractions at the command line."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from conftest import TINY_SIAMESE, compose_config, run_main

from pipeline.callbacks.learning_check import single_predicted_class
from pipeline.data.synthetic.verification import generate_verification
from pipeline.trainers.engine import train
from pipeline.utils.errors import UserError

VERIFICATION = ["experiment=face_verification", "data.passes=1", "trainer.max_epochs=3", "hyp.batch_size=12",
                "data.images_per_identity=3", "callbacks.verification_report.projector_size=12", "data.num_workers=0", "logger=none"]
DETECTION = ["experiment=facemask_detection", "data.image_size=64", "data.synthetic.num_images=16",
             "data.synthetic.image_size=64", "data.num_workers=0", "hyp.batch_size=4", "trainer.max_epochs=1",
             "logger=none", "+trainer.limit_train_batches=1", "+trainer.limit_val_batches=1"]


def test_real_only_verification_tests_its_best_eer_real_epoch(tmp_path, caplog):
    root = generate_verification(tmp_path / "faces", num_identities=16, images_per_identity=3,
                                 fakes_per_identity=0, image_size=32)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING):
        train(compose_config([*VERIFICATION, f"data.root={root}"], out))
    assert "val/eer_mean is NaN" in caplog.text and "model selection uses val/eer_real" in caplog.text
    results = json.loads((out / "results" / "metrics.json").read_text())
    history = json.loads((out / "results" / "metrics_history.json").read_text())
    scores = [row["val/eer_real"] for row in history]
    assert results["best"]["monitor"] == "val/eer_real"
    assert results["best"]["score"] == pytest.approx(min(scores))
    best_epoch = scores.index(min(scores))
    tested = json.loads((out / "results" / "test_metrics.json").read_text())["checkpoint"]
    assert tested.endswith(f"epoch{best_epoch:03d}.ckpt")


def test_missing_monitor_stops_with_one_line(tmp_path):
    cfg = compose_config([*DETECTION, "task.monitor=val/nothing"], tmp_path / "run", tmp_path / "data")
    with pytest.raises(UserError) as info:
        train(cfg)
    message = str(info.value)
    assert "\n" not in message and message.startswith("task.monitor: 'val/nothing' is missing after validation epoch 0")
    assert "val/map_50" in message


def test_detector_without_boxes_warns(tmp_path, caplog):
    cfg = compose_config([*DETECTION, "model.min_score=1.0"], tmp_path / "run", tmp_path / "data")
    with caplog.at_level(logging.WARNING):
        train(cfg)
    assert "not learning: the detector emitted no box above model.min_score" in caplog.text


def test_single_predicted_class_is_detected():
    stuck = torch.tensor([[5, 0], [3, 0]])
    assert single_predicted_class(stuck, ["a", "b"]) == "a"
    assert single_predicted_class(torch.tensor([[5, 1], [3, 2]]), ["a", "b"]) is None
    assert single_predicted_class(torch.tensor([[5, 0], [0, 0]]), ["a", "b"]) is None


def test_unmet_fractions_exit_2_with_one_line(tmp_path):
    proc = run_main("train.py", "experiment=image_folder", f"paths.results_dir={tmp_path}",
                    f"paths.data_dir={tmp_path / 'data'}", "data.synthetic.num_people=2", "data.num_workers=0",
                    *TINY_SIAMESE[-1:])
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "data.split: fractions {train: 0.7, val: 0.15, test: 0.15} need at least 3" in lines[0]
