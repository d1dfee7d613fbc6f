"""Face-attribute experiments from the command line: a tiny training run, bin/test.py with TTA, outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import run_cli, run_main

from pipeline.delivery.predict import predict
from pipeline.runs.run import compose_command

TINY_BOOSTCAMP = ["data.synthetic.num_people=40", "data.synthetic.image_size=[32,24]", "data.image_size=[32,24]",
                  "data.num_workers=0", "hyp.batch_size=32", "trainer.log_every_n_steps=2"]


def train_run(results: Path, data: Path, *overrides: str) -> Path:
    proc = run_cli("train.py", f"paths.results_dir={results}", f"paths.data_dir={data}", *TINY_BOOSTCAMP, *overrides)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return Path(proc.stdout.split("Run folder: ")[-1].split()[0])


@pytest.fixture(scope="module")
def data_root(module_tmp) -> Path:
    return module_tmp


@pytest.mark.slow
def test_resnet18_focal_trains_and_tests_with_tta(tmp_path, data_root):
    run = train_run(tmp_path, data_root, "experiment=mask_age_gender", "model=resnet18", "hyp=focal", "trainer.max_epochs=1")
    results = run / "results"
    for name in ("test_metrics.json", "per_class_report.csv", "per_class_report.json", "test_confusion_label.png",
                 "val_confusion_label.png", "test_predictions.png"):
        assert (results / name).is_file(), name
    with (results / "per_class_report.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 18
    before = json.loads((results / "test_metrics.json").read_text())
    proc = run_cli("test.py", f"run={run}", "data.num_workers=0", "task.tta=flip")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (tested,) = (run / "tests").iterdir()
    assert (tested / "results" / "test_confusion_label.png").is_file()  # test_callbacks keeps the confusion matrix
    after = json.loads((tested / "results" / "test_metrics.json").read_text())
    assert after["test/loss"] == pytest.approx(before["test/loss"], rel=1e-4)  # loss is the clean pass
    assert {"test/acc", "test/f1"} <= set(after)


@pytest.mark.slow
def test_separate_task_runs_combine_into_a_submission(tmp_path, data_root):
    runs = [train_run(tmp_path, data_root, "experiment=mask_age_gender", f"data.target={target}", "debug=limit",
                      "trainer.max_epochs=1", f"name=attr_{target}") for target in ("mask", "gender", "age")]
    eval_folder = data_root / "synthetic" / "boostcamp_p40_32x24_s0" / "eval"
    out = predict(compose_command("predict", [f"run=[{','.join(map(str, runs))}]", f"input={eval_folder}",
                                              f"out={tmp_path / 'out'}", "options.tta=flip"]))
    with out.open() as fh:
        rows = list(csv.reader(fh))
    assert out.name == "submission.csv" and rows[0] == ["ImageID", "ans"] and len(rows) == 1 + 8 * 7
    assert all(0 <= int(ans) < 18 for _, ans in rows[1:])


def test_unknown_target_is_one_line_error(tmp_path):
    proc = run_main("train.py", f"paths.results_dir={tmp_path}", "experiment=mask_age_gender", "data.target=hair",
                    f"paths.data_dir={tmp_path}")
    assert proc.returncode == 2 and "data.target" in proc.stderr
