"""Delivery of the siamese run: ONNX export with two inputs, pair prediction, the inference benchmark."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from conftest import TINY_SIAMESE, run_main

from pipeline.data.synthetic.shapes import sample_pair
from pipeline.delivery.backend import OnnxBackend
from pipeline.delivery.export import ParityError, export_task
from pipeline.delivery.predict import predict
from pipeline.runs.run import Run, compose_command
from pipeline.utils.errors import UserError


@pytest.fixture(scope="module")
def siamese_run(tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    proc = run_main("train.py", f"paths.results_dir={results}", *TINY_SIAMESE, "trainer.max_epochs=1", "test_after_train=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (results / "siamese_shapes").iterdir()
    proc = run_main("export.py", f"run={run}", "data.num_workers=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


@pytest.fixture(scope="module")
def pair_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    for side in ("left", "right"):
        (root / side).mkdir()
    truth = []
    for i in range(6):
        image1, image2, shape1, shape2 = sample_pair(np.random.default_rng(i), 32, False)
        cv2.imwrite(str(root / "left" / f"{i}.png"), image1[:, :, ::-1])
        cv2.imwrite(str(root / "right" / f"{i}.png"), image2[:, :, ::-1])
        truth.append(int(shape1 == shape2))
    (root / "left" / "unpaired.png").write_bytes((root / "left" / "0.png").read_bytes())
    return root, truth


def test_export_has_two_dynamic_inputs_metadata_and_parity(siamese_run):
    report = json.loads((siamese_run / "export" / "export.json").read_text())
    assert report["max_abs_diff"]["logit"] <= 1e-4
    assert report["parity_samples"] == 16
    model = OnnxBackend(siamese_run / "export" / "model.onnx")
    assert model.input_names == ["image1", "image2"]
    assert model.metadata["task"] == "siamese"
    assert model.metadata["input_size"] == [3, 32, 32] and model.metadata["outputs"][0]["threshold"] == 0.5
    batch = np.zeros((5, 3, 32, 32), np.float32)
    assert model({"image1": batch, "image2": batch})["logit"].shape == (5,)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_predict_folders_and_csv_agree_across_backends(siamese_run, pair_folders, tmp_path):
    root, _ = pair_folders
    by_folder = _rows(predict(compose_command("predict", [f"run={siamese_run}", f"input={root}", f"out={tmp_path / 'a'}", "data.num_workers=0"])))
    assert [(r["path1"].split("/")[-1], r["path2"].split("/")[-1]) for r in by_folder] == [(f"{i}.png", f"{i}.png") for i in range(6)]
    pairs_csv = tmp_path / "pairs.csv"
    pairs_csv.write_text("path1,path2\n" + "".join(f"{root}/left/{i}.png,{root}/right/{i}.png\n" for i in range(6)))
    by_csv = _rows(predict(compose_command("predict", [f"run={siamese_run}", f"input={pairs_csv}", f"out={tmp_path / 'b'}", "backend=onnx"])))
    for a, b in zip(by_folder, by_csv, strict=True):
        assert abs(float(a["probability"]) - float(b["probability"])) < 1e-5
        assert a["same"] == str(int(float(a["probability"]) >= 0.5))


def test_predict_reports_missing_input_and_bad_backend(siamese_run, pair_folders):
    with pytest.raises(UserError, match="input"):
        predict(compose_command("predict", [f"run={siamese_run}"]))
    with pytest.raises(UserError, match="backend"):
        predict(compose_command("predict", [f"run={siamese_run}", f"input={pair_folders[0]}", "backend=tensorrt"]))


def test_benchmark_writes_figures(siamese_run):
    proc = run_main("benchmark.py", "inference", f"run={siamese_run}", "runs=5", "warmup=1", "batch=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((siamese_run / "results" / "benchmark.json").read_text())
    assert saved["threads"] == 1 and saved["parameters"] > 0
    assert saved["onnx_bytes"] == (siamese_run / "export" / "model.onnx").stat().st_size
    for backend in ("torch", "onnxruntime"):
        assert 0 < saved[backend]["latency_ms_median"] <= saved[backend]["latency_ms_p95"]
        assert saved[backend]["throughput_per_s"] > 0


def test_export_fails_when_parity_is_off(siamese_run, tmp_path):
    run = Run.open(siamese_run, ["data.num_workers=0"])
    with pytest.raises(ParityError, match="differs from PyTorch"):
        export_task(run.task(), run.datamodule(), tmp_path, samples=4, tolerance=-1.0)
    assert json.loads((tmp_path / "export.json").read_text())["parity_samples"] == 4


def run_all(commands: list[tuple[str, ...]]) -> list:
    """Each command's ``main()`` in this process (``run_main``): the same argv, output and exit code as
    ``run_cli`` without a new interpreter's seconds of imports per command."""
    return [run_main(*command) for command in commands]


def test_cli_user_errors_exit_2_with_one_line(siamese_run):
    on_run = [(script, f"run={siamese_run}", *args) for script, *args in (
        ("export.py", "sample=3"), ("predict.py", "input=.", "output=out.csv"), ("test.py", "bogus=1"),
        ("serve.py", "prot=1"), ("benchmark.py", "inference", "bacth=2"), ("predict.py", "input=.", "data.num_wokers=0"))]
    commands = [("predict.py", f"run={siamese_run}"), *on_run, ("benchmark.py", "train", "stpes=3"), ("train.py", "hyp.epoch=3")]
    missing_input, *procs = run_all(commands)
    assert missing_input.returncode == 2 and missing_input.stderr.strip().startswith("error: input")
    for command, proc in zip(commands[1:], procs, strict=True):
        _one_line_error(proc, command[-1].split("=")[0])


def _one_line_error(proc, key: str) -> None:
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 2 and len(errors) == 1 and key in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_every_command_prints_its_config(siamese_run):
    on_run = [f"run={siamese_run}", "--cfg", "job"]
    commands = [("test.py", *on_run), ("predict.py", *on_run), ("export.py", *on_run), ("serve.py", *on_run),
                ("benchmark.py", "inference", *on_run), ("benchmark.py", "train", "--cfg", "job"), ("train.py", "--cfg", "job")]
    for command, proc in zip(commands, run_all(commands), strict=True):
        assert proc.returncode == 0, (command, proc.stderr[-2000:])
        assert "name: siamese_shapes" in proc.stdout, command
