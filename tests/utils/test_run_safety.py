"""Run folders as data: a hostile folder runs nothing, one writer per run, failed work leaves a run usable."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import socket
from pathlib import Path

import pytest
import torch
from conftest import one_line_error, plant, run_main
from omegaconf import OmegaConf

from pipeline.delivery.backend import OnnxBackend, onnx_problem
from pipeline.delivery.export import MODEL_FILE, ParityError, ensure_export, export_task
from pipeline.runs.folder import latest_run, run_lock
from pipeline.runs.run import Run
from pipeline.runs.trust import refused_targets
from pipeline.utils.errors import UserError


@pytest.fixture
def run(toy_run, tmp_path) -> Path:
    """A copy of the toy run (conftest's, trained through bin/train.py: its .hydra files as Hydra wrote them) this
    test may damage."""
    copy = tmp_path / "brightness" / toy_run.name
    shutil.copytree(toy_run, copy)
    return copy


class Marker:
    """Unpickling this creates a file: what a hostile config.pickle would do."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def test_hostile_run_folder_runs_nothing_and_says_why(run, tmp_path):
    marker = tmp_path / "marker"
    plant(run, "callbacks.evil", {"_target_": "os.system", "command": f"touch {marker}"})
    (run / ".hydra" / "config.pickle").write_bytes(pickle.dumps(Marker(marker)))
    error = one_line_error(run_main("train.py", f"resume={run}", "trainer.max_epochs=2"),
                            "callbacks.evil", "os.system", "trust_run=true")
    assert not marker.exists(), "neither the pickle nor the config may run code on resume"
    assert str(run) in error
    with pytest.raises(UserError, match=r"callbacks\.evil\._target_: 'os\.system' in run folder .*trust_run=true"):
        Run.open(run)
    assert not marker.exists()
    Run.open(run, ["trust_run=true"])  # the documented way out: the check is skipped, nothing built yet


@pytest.mark.parametrize("node", [
    {"_target_": "builtins.exec", "_args_": ["open('/tmp/x', 'w')"]},
    {"_target_": "subprocess.run", "_partial_": True, "args": ["true"]},
    {"_target_": "pipeline.runs.folder.os.system", "command": "true"},  # a project module's import of os
    {"_target_": "pipeline.utils.files.atomic_write_text", "path": "~/.bashrc", "text": "x"},  # a function
    {"_target_": "torch.hub.load", "repo_or_dir": "."},
    {"_target_": "${oc.env:EVIL}"},
])
def test_only_classes_of_the_project_and_named_libraries_are_built(run, node):
    plant(run, "data.augment.evil", node)
    with pytest.raises(UserError, match=r"data\.augment\.evil\._target_: .* is not built"):
        Run.open(run)


def test_the_saved_config_cannot_trust_itself(run):
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    assert not list(refused_targets(cfg)), "the project's own runs pass"
    plant(run, "trust_run", True)
    plant(run, "callbacks.evil", {"_target_": "os.system", "command": "true"})
    with pytest.raises(UserError, match="trust_run=true"):
        Run.open(run)


def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(run, caplog):
    with run_lock(run):
        holder = json.loads((run / ".lock").read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        with pytest.raises(UserError, match=rf"run in progress \(pid {os.getpid()} on host .*\): {run}"):
            with run_lock(run):
                pass
        (run / "checkpoints" / "last.ckpt").unlink()  # still in its first epoch
        one_line_error(run_main("train.py", f"resume={run}"), f"run in progress (pid {os.getpid()}", str(run))
    assert not (run / ".lock").exists()
    (run / ".lock").write_text(json.dumps({"pid": 2**22 + 7, "host": socket.gethostname()}))  # its holder died
    with run_lock(run):
        assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
    assert "stale lock" in caplog.text and str(2**22 + 7) in caplog.text


def test_failed_resume_leaves_the_run_resumable_and_truncated_history_is_set_aside(run, tmp_path):
    # The folder's logging setup is not used either: its handlers and formats could write any file.
    hydra_yaml = run / ".hydra" / "hydra.yaml"
    hydra_yaml.write_text(hydra_yaml.read_text().replace("${hydra.runtime.output_dir}/train.log", str(tmp_path / "bashrc")))
    saved = {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()}
    proc = run_main("train.py", f"resume={run}", "trainer.max_epochs=2", "trainer.precision=abc")
    assert proc.returncode != 0
    assert {p.name: p.read_bytes() for p in (run / ".hydra").iterdir()} == saved, "a config that did not build is not saved"
    history = run / "results" / "metrics_history.json"
    truncated = history.read_text()[:25]
    history.write_text(truncated)
    proc = run_main("train.py", f"resume={run}", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["epoch"] == 1
    assert [row["epoch"] for row in json.loads(history.read_text())] == [1]
    assert (run / "results" / "metrics_history.json.broken").read_text() == truncated
    assert "cannot be read" in (run / "train.log").read_text() and not (tmp_path / "bashrc").exists()
    assert "max_epochs: 2" in (run / ".hydra" / "config.yaml").read_text()
    assert "trainer.max_epochs=2" in (run / ".hydra" / "overrides.yaml").read_text()


def test_truncated_or_failed_onnx_export_is_detected_and_rebuilt(run):
    toy = Run.open(run)
    model = run / "export" / MODEL_FILE
    ensure_export(toy)
    good = model.read_bytes()
    with pytest.raises(ParityError, match="not installed"):
        export_task(toy.task(), toy.datamodule(), model.parent, samples=4, tolerance=-1.0)  # fails its check
    assert model.read_bytes() == good, "a failed export leaves the previous model in place"
    assert json.loads((model.parent / "export.json").read_text())["model"] is None
    model.write_bytes(good[: len(good) // 2])
    assert "truncated" in onnx_problem(model)
    with pytest.raises(UserError, match=r"model\.onnx: not a valid ONNX model.*bin/export\.py"):
        OnnxBackend(model)
    assert ensure_export(toy) == model and onnx_problem(model) is None
    assert OnnxBackend(model).metadata


def _fake_run(experiment: Path, name: str, *files: str) -> Path:
    run = experiment / name
    for file in (".hydra/config.yaml", *files):
        (run / file).parent.mkdir(parents=True, exist_ok=True)
        (run / file).write_text("{}")
    return run


def test_latest_is_the_newest_usable_run(tmp_path, capsys):
    good = _fake_run(tmp_path, "2026-01-01_00-00-00", "checkpoints/last.ckpt", "results/metrics.json")
    _fake_run(tmp_path, "2026-01-01_00-00-01")  # failed before its first epoch ended
    _fake_run(tmp_path, "2026-01-01_00-00-02", "results/metrics.json")  # debug=fast: finished, no checkpoint
    assert latest_run(tmp_path) == good
    assert capsys.readouterr().err.startswith(f"latest run: {good} (finished, last checkpoint ")
    shutil.rmtree(good)
    with pytest.raises(UserError, match="no usable run .* its 2 run\\(s\\) have no checkpoints/last.ckpt"):
        latest_run(tmp_path)
