"""A sixth task defined only under tests/toy (datamodule, task, YAML) goes through every bin/ command."""

from __future__ import annotations

import csv
import json
import shutil

import cv2
import numpy as np
from conftest import TOY, run_main
from fastapi.testclient import TestClient
from test_run_layout import folder_hashes

from pipeline.delivery.serve import create_app
from pipeline.runs.run import Run


def test_toy_task_trains_tests_predicts_exports_serves_and_benchmarks(toy_run, tmp_path):
    """Trained by bin/train.py (conftest's toy_run, copied here); the other commands run their main() in this
    process (``run_main``)."""
    run_dir = tmp_path / "results" / "brightness" / toy_run.name
    shutil.copytree(toy_run, run_dir, symlinks=True)
    before = folder_hashes(run_dir)
    proc = run_main("test.py", f"run={run_dir}")
    assert proc.returncode == 0 and "test, epoch" in proc.stdout, proc.stderr[-3000:]
    assert folder_hashes(run_dir) == before  # a re-test never changes the run
    (tested,) = (run_dir / "tests").iterdir()
    assert "test/acc" in json.loads((tested / "results" / "test_metrics.json").read_text())
    proc = run_main("export.py", f"run={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    images = tmp_path / "images"
    images.mkdir()
    for name, value in (("dark.png", 40), ("bright.png", 200)):
        cv2.imwrite(str(images / name), np.full((24, 24, 3), value, np.uint8))
    answers = {}
    for backend in ("torch", "onnx"):
        proc = run_main("predict.py", f"run={run_dir}", f"input={images}", f"out={tmp_path / backend}", f"backend={backend}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        with open(tmp_path / backend / "predictions.csv", newline="") as fh:
            answers[backend] = {row["path"].split("/")[-1]: row for row in csv.DictReader(fh)}
    assert {k: v["label"] for k, v in answers["torch"].items()} == {k: v["label"] for k, v in answers["onnx"].items()}
    with TestClient(create_app(Run.open(run_dir))) as client:
        for name, row in answers["torch"].items():
            body = client.post("/predict", files={"image": (name, (images / name).read_bytes())}).json()
            assert body["label"] == row["label"]
            assert abs(body["probabilities"]["bright"] - float(row["probability"])) < 1e-5
    out = tmp_path / "bench.json"
    proc = run_main("benchmark.py", "train", *TOY, f"paths.results_dir={tmp_path / 'results'}", "trainer.max_epochs=1",
                    f"out={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(out.read_text())["experiment"] == "brightness"
