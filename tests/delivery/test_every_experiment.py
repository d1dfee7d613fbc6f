"""Every experiment delivers one behaviour: predict with torch == predict with onnx == the service, and
``bin/benchmark.py train`` runs (a TTA run included)."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import EXPERIMENTS, run_cli
from fastapi.testclient import TestClient

from pipeline.data.synthetic.shapes import sample_pair
from pipeline.delivery.answers import ClassScores, Detections, Embeddings, PairScores
from pipeline.delivery.export import ensure_export
from pipeline.delivery.predict import predict
from pipeline.delivery.serve import create_app
from pipeline.runs.run import Run, compose_command

CASES = [(name, ()) for name in EXPERIMENTS] + [("mask_age_gender", ("task.tta=flip_crops",))]
TINY = ["debug=limit", "trainer.max_epochs=1", "test_after_train=false", "logger=none", "trainer.num_sanity_val_steps=0"]


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def some_images(datamodule, folder: Path, count: int = 6) -> list[Path]:
    """A few of the experiment's own synthetic images; shapes are drawn in memory, so written here."""
    root = getattr(datamodule, "data_root", None)
    if root is None:
        folder.mkdir(parents=True)
        for i in range(count // 2):
            for j, image in enumerate(sample_pair(np.random.default_rng(i), 32, False)[:2]):
                cv2.imwrite(str(folder / f"{i}_{j}.png"), image[:, :, ::-1])
        root = folder
    root = root() if callable(root) else root
    images = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    return [images[i] for i in np.linspace(0, len(images) - 1, count).astype(int)]


def prediction_input(answer: type, images: list[Path], folder: Path) -> Path:
    """What predict takes for the answer: a folder of images, a pairs CSV (path1,path2) or a path CSV of pairs."""
    folder.mkdir(parents=True, exist_ok=True)
    if answer is PairScores:
        (folder / "pairs.csv").write_text("path1,path2\n" + "".join(f"{a},{b}\n" for a, b in zip(images[::2], images[1::2])))
        return folder / "pairs.csv"
    if answer is Embeddings:
        (folder / "pairs.csv").write_text("path\n" + "".join(f"{p}\n" for p in images))
        return folder / "pairs.csv"
    for i, path in enumerate(images):
        (folder / f"{i}{path.suffix}").write_bytes(path.read_bytes())
    return folder


def upload(path: Path, field: str = "image") -> dict:
    return {field: (path.name, path.read_bytes())}


def check_classes(client: TestClient, torch_rows: list[dict], onnx_rows: list[dict]) -> None:
    for a, b in zip(torch_rows, onnx_rows, strict=True):
        assert a["label"] == b["label"] and abs(float(a["probability"]) - float(b["probability"])) < 1e-4
        answer = client.post("/predict", files=upload(Path(a["path"])))
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["label"] == a["label"]
        assert min(abs(p - float(a["probability"])) for p in body["probabilities"].values()) < 1e-4


def check_detection(client: TestClient, torch_rows: list[dict], onnx_rows: list[dict], inputs: Path) -> None:
    assert [r["label"] for r in torch_rows] == [r["label"] for r in onnx_rows]
    for a, b in zip(torch_rows, onnx_rows, strict=True):
        assert abs(float(a["score"]) - float(b["score"])) < 1e-3
    for image in sorted(inputs.iterdir()):
        answer = client.post("/predict", files=upload(image))
        assert answer.status_code == 200, answer.text
        expected = [r for r in torch_rows if Path(r["path"]).name == image.name]
        assert len(answer.json()["detections"]) == len(expected)
        # A request's own threshold: every box at 0; best needs the run's saved threshold (no test ran: 400).
        lowest = client.post("/predict?score_threshold=0", files=upload(image))
        assert lowest.status_code == 200 and len(lowest.json()["detections"]) >= len(expected)
        assert all(box["score"] >= 0 for box in lowest.json()["detections"])
        best = client.post("/predict?score_threshold=best", files=upload(image))
        assert best.status_code == 400 and "has none" in best.json()["error"], best.text


def check_pairs(client: TestClient, torch_rows: list[dict], onnx_rows: list[dict], score: str, pairs: list) -> None:
    for a, b, (first, second) in zip(torch_rows, onnx_rows, pairs, strict=True):
        assert abs(float(a[score]) - float(b[score])) < 1e-4
        answer = client.post("/compare", files={**upload(first, "image1"), **upload(second, "image2")})
        assert answer.status_code == 200, answer.text
        assert abs(answer.json()["score"] - float(a[score])) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize(("experiment", "extra"), CASES)
def test_predict_onnx_service_and_benchmark_agree(experiment, extra, tmp_path, data_dir):
    results = tmp_path / "results"
    common = [f"experiment={experiment}", f"paths.data_dir={data_dir}", "data.num_workers=0", *extra]
    proc = run_cli("train.py", *common, f"paths.results_dir={results}", *TINY)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (results / experiment).iterdir()
    run = Run.open(run_dir)
    ensure_export(run)
    answer = run.task().export_spec().answer
    images = some_images(run.datamodule(), tmp_path / "drawn")
    inputs = prediction_input(answer, images, tmp_path / "input")
    outputs = {backend: rows(predict(compose_command("predict", [f"run={run_dir}", f"input={inputs}", f"backend={backend}",
                                                                 f"out={tmp_path / backend}"])))
               for backend in ("torch", "onnx")}
    with TestClient(create_app(run)) as client:
        if answer is ClassScores:
            check_classes(client, outputs["torch"], outputs["onnx"])
        elif answer is Detections:
            check_detection(client, outputs["torch"], outputs["onnx"], inputs)
        else:
            pairs = list(zip(images[::2], images[1::2]))
            check_pairs(client, outputs["torch"], outputs["onnx"], "probability" if answer is PairScores else "similarity", pairs)
    proc = run_cli("benchmark.py", "train", *common, f"paths.results_dir={results}", "trainer.max_epochs=1", "plain=false",
                   f"out={tmp_path / 'bench.json'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
