"""Resume: all three forms continue in the original folder; interrupted + resumed == uninterrupted."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from conftest import TINY_SIAMESE, run_main

# Smaller than TINY_SIAMESE (4 steps an epoch, no test stage): what resume must restore is the same at any size.
SMALL = {"data.train_size": "data.train_size=128", "data.val_size": "data.val_size=64"}


def _train(results: Path, *extra: str):
    """bin/train.py's main() in this process (the test is about the run folder, not about a process of its own)."""
    keys = {arg.split("=")[0] for arg in extra}
    tiny = [SMALL.get(arg.split("=")[0], arg) for arg in TINY_SIAMESE if arg.split("=")[0] not in keys]
    proc = run_main("train.py", f"paths.results_dir={results}", *tiny, "test_after_train=false", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _runs(results: Path) -> list[Path]:
    return sorted(p for p in (results / "siamese_shapes").iterdir() if p.is_dir())


def _last(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def test_interrupted_and_resumed_equals_uninterrupted(tmp_path):
    """With dataloader workers: their seeds and the sampler's epoch must follow the restored epoch."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    _train(straight, "trainer.max_epochs=3", "data.num_workers=2")
    # Stopped after 2 of the 3 epochs the learning-rate schedule plans for: an interrupted run.
    _train(split, "trainer.max_epochs=2", "hyp.scheduler.T_max=3", "data.num_workers=2")
    (first,) = _runs(split)
    assert _last(first)["epoch"] == 1
    _train(split, f"resume={first}", "trainer.max_epochs=3")
    assert _runs(split) == [first], "resume must continue in the original run folder"

    a, b = _last(_runs(straight)[0]), _last(first)
    assert a["epoch"] == b["epoch"] == 2 and a["global_step"] == b["global_step"]
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)
    history_a = json.loads((_runs(straight)[0] / "results" / "metrics_history.json").read_text())
    history_b = json.loads((first / "results" / "metrics_history.json").read_text())
    assert [row["epoch"] for row in history_b] == [0, 1, 2]
    for row_a, row_b in zip(history_a, history_b):
        assert abs(row_a["val/loss"] - row_b["val/loss"]) < 1e-5
    assert b["optimizer_states"][0]["state"], "optimizer state restored and saved"
    assert b["lr_schedulers"][0]["last_epoch"] == a["lr_schedulers"][0]["last_epoch"] == 3


def test_rerun_pickle_and_latest_continue_the_same_run(tmp_path):
    results = tmp_path / "results"
    _train(results, "trainer.max_epochs=1", "hyp.scheduler.T_max=3")
    (run,) = _runs(results)
    pickle = run / ".hydra" / "config.pickle"
    assert pickle.is_file()
    proc = _train(results, "--experimental-rerun", str(pickle), "trainer.max_epochs=2")
    assert _runs(results) == [run] and _last(run)["epoch"] == 1
    assert f"warning: {pickle} is a pickle, and loading it runs any code it holds" in proc.stderr
    proc = run_main("train.py", f"paths.results_dir={results}", f"resume={run}", "experiment=glasses")
    assert proc.returncode == 2 and f"{run} is a run of experiment=siamese_shapes" in proc.stderr
    # experiment=<x> names where latest looks; it is the run's own experiment, not a change to it.
    proc = _train(results, "resume=latest", "experiment=siamese_shapes", "trainer.max_epochs=3")
    assert _runs(results) == [run] and _last(run)["epoch"] == 2
    assert f"Run folder: {run}" in proc.stdout
    assert "Resuming" in (run / "train.log").read_text()
