"""Glasses delivery: one preprocessing everywhere, export parity and size, folder prediction, the service."""

from __future__ import annotations

import csv
import io
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cv2
import httpx
import numpy as np
import pytest
import torch
import uvicorn
from conftest import run_main
from omegaconf import OmegaConf

from pipeline.data.io import load_image
from pipeline.delivery.backend import OnnxBackend
from pipeline.delivery.predict import predict
from pipeline.delivery.serve import ServeLimits, create_app
from pipeline.runs.run import Run, compose_command

TINY_GLASSES = [
    "experiment=glasses", "data.synthetic.num_images=240", "data.synthetic.num_photos=10", "data.num_workers=0",
    "hyp.batch_size=32", "trainer.max_epochs=1", "test_after_train=false", "trainer.log_every_n_steps=2",
]


@pytest.fixture(scope="module")
def glasses_run(tmp_path_factory):
    results, cache = tmp_path_factory.mktemp("results"), tmp_path_factory.mktemp("cache")
    proc = run_main("train.py", f"paths.results_dir={results}", f"paths.cache_dir={cache}", *TINY_GLASSES)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (results / "glasses").iterdir()
    proc = run_main("export.py", f"run={run}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "max abs diff" in proc.stdout
    return run


@pytest.fixture(scope="module")
def datamodule(glasses_run):
    return Run.open(glasses_run).datamodule()


@pytest.fixture(scope="module")
def photos(datamodule):
    """The synthetic unaligned photos and, per file, whether it shows a face."""
    folder = datamodule.data_root / "photos"
    faces = json.loads((folder / "faces.json").read_text())
    return folder, {name: entry["face_box"] is not None for name, entry in faces.items()}


def png_bytes(rgb: np.ndarray) -> bytes:
    return cv2.imencode(".png", rgb[:, :, ::-1])[1].tobytes()


def test_export_is_small_with_metadata_and_parity(glasses_run):
    report = json.loads((glasses_run / "export" / "export.json").read_text())
    assert report["max_abs_diff"]["probabilities"] <= 1e-4
    assert report["size_bytes"] <= 1_000_000
    metadata = OnnxBackend(glasses_run / "export" / "model.onnx").metadata
    assert metadata["task"] == "glasses" and metadata["class_names"] == ["no_glasses", "glasses"]
    assert metadata["input_size"] == [3, 82, 82] and metadata["outputs"][0]["threshold"] == 0.5
    assert metadata["outputs"][0]["name"] == "probabilities" and metadata["outputs"][0]["activation"] == "softmax"
    assert metadata["routes"] == [{"path": "/glass_no_glass/", "output": "probabilities", "answer": "answer"}]
    assert metadata["mean"] == [0.5, 0.5, 0.5] and metadata["preprocessing"] == "eye_zone"


def test_same_tensor_for_the_same_file_in_eval_predict_and_serve(glasses_run, datamodule):
    dataset = datamodule.datasets["val"]
    served = create_app(glasses_run).state.exported.datamodule
    for index in range(3):
        path = dataset.samples[index].path
        from_dataset = dataset[index]["image"]
        torch.testing.assert_close(datamodule.preprocess(load_image(path)), from_dataset, rtol=0, atol=0)
        torch.testing.assert_close(served.preprocess(load_image(path)), from_dataset, rtol=0, atol=0)


def test_predict_writes_csv_prints_glasses_and_answers_no_face(glasses_run, photos, tmp_path, capsys):
    folder, has_face = photos
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    out = predict(compose_command("predict", [f"run={glasses_run}", f"input={folder}", f"out={tmp_path}", "data.detect_face=true"]))
    with open(out, newline="") as fh:
        rows = {row["path"].split("/")[-1]: row for row in csv.DictReader(fh)}
    assert rows["broken.png"]["label"] == "unreadable"
    for name, face in has_face.items():
        if not face:  # the Haar cascade finds no face where there is none
            assert rows[name]["label"] == "no_face" and rows[name]["probability"] == ""
    assert {row["label"] for row in rows.values()} <= {"glasses", "no_glasses", "no_face", "unreadable"}
    printed = [line for line in capsys.readouterr().out.splitlines() if line.endswith(".jpg")]
    assert sorted(p.split("/")[-1] for p in printed) == sorted(n for n, r in rows.items() if r["label"] == "glasses")


def test_predict_backends_agree(glasses_run, datamodule, tmp_path):
    images = datamodule.data_root / "images"
    by_torch = predict(compose_command("predict", [f"run={glasses_run}", f"input={images}", f"out={tmp_path / 't'}", "options.quiet=true"]))
    by_onnx = predict(compose_command("predict", [f"run={glasses_run}", f"input={images}", f"out={tmp_path / 'o'}", "options.quiet=true", "backend=onnx"]))
    a, b = (list(csv.DictReader(open(path, newline=""))) for path in (by_torch, by_onnx))
    assert len(a) == len(b) == 240
    assert max(abs(float(x["probability"]) - float(y["probability"])) for x, y in zip(a, b)) < 1e-5


@pytest.fixture(scope="module")
def server(glasses_run):
    """The service on a free port of 127.0.0.1 (uploads limited to 200 kB), served by uvicorn in a thread."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(glasses_run, ServeLimits(max_upload_bytes=200_000))
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if uv.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    uv.should_exit = True
    thread.join(timeout=10)


def test_service_answers_like_predict(server, datamodule, glasses_run):
    path = datamodule.datasets["test"].samples[0].path
    task = Run.open(glasses_run).task()
    expected = float(task.probabilities(datamodule.preprocess(load_image(path))[None])["label"][0, 1].detach())
    assert httpx.get(f"{server}/ping/").json()["status"] == "ok"
    answer = httpx.post(f"{server}/glass_no_glass/", files={"image": ("face.jpg", path.read_bytes())}).json()
    assert answer["answer"] == ("glasses" if expected >= 0.5 else "no_glasses")
    assert abs(answer["probability"] - expected) < 1e-5
    generic = httpx.post(f"{server}/predict", files={"image": ("face.jpg", path.read_bytes())}).json()
    assert abs(generic["probabilities"]["glasses"] - expected) < 1e-5
    assert abs(sum(generic["probabilities"].values()) - 1) < 1e-5


def test_service_rejects_bad_uploads_with_4xx_json(server, datamodule):
    image = png_bytes(load_image(datamodule.datasets["test"].samples[0].path))
    cases = {
        "text": ({"image": ("notes.txt", b"hello, not an image")}, 415),
        "truncated": ({"image": ("cut.png", image[: len(image) // 2])}, 415),
        "empty": ({"image": ("empty.png", b"")}, 400),
        "oversized": ({"image": ("big.png", b"\0" * 300_000)}, 413),
        "wrong field": ({"file": ("face.png", image)}, 422),
    }
    for name, (files, status) in cases.items():
        response = httpx.post(f"{server}/glass_no_glass/", files=files)
        assert response.status_code == status, name
        assert "error" in response.json(), name
    assert httpx.post(f"{server}/glass_no_glass/", content=b"").status_code == 422


def test_service_handles_50_concurrent_requests(server, datamodule):
    paths = [s.path for s in datamodule.datasets["test"].samples[:5]]
    uploads = [paths[i % len(paths)].read_bytes() for i in range(50)]
    with httpx.Client(timeout=60) as client, ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(lambda data: client.post(f"{server}/glass_no_glass/", files={"image": ("f.jpg", data)}), uploads))
    assert all(r.status_code == 200 for r in responses)
    by_image: dict[int, set] = {}
    for i, response in enumerate(responses):
        by_image.setdefault(i % len(paths), set()).add(round(response.json()["probability"], 6))
    assert all(len(values) == 1 for values in by_image.values())


def test_service_answers_no_face(glasses_run, photos):
    from fastapi.testclient import TestClient

    run = Run.open(glasses_run, ["data.detect_face=true"])
    folder, has_face = photos
    no_face = next(name for name, face in has_face.items() if not face)
    with TestClient(create_app(run)) as client:
        for data in ((folder / no_face).read_bytes(), png_bytes(np.zeros((120, 160, 3), np.uint8))):
            response = client.post("/glass_no_glass/", files={"image": ("photo.jpg", io.BytesIO(data))})
            assert response.status_code == 200 and response.json() == {"answer": "no_face", "probability": None}
    assert OmegaConf.select(Run.open(glasses_run).cfg, "data.detect_face") is False
