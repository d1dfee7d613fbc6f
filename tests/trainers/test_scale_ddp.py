"""DDP from the command line: 2 CPU processes (gloo) train the same model as 1 process with the same global batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_SIAMESE, run_cli

# A model whose output for one sample does not depend on the rest of the batch: BatchNorm statistics
# are per rank (SyncBatchNorm needs GPUs), so a one-block ViT (LayerNorm); dropout off (masks differ per
# rank); SGD, because Adam divides by the gradient's magnitude and so inflates float noise where it is ~0.
SAME_MODEL = [*TINY_SIAMESE, "hyp.epochs=2", "hyp=sgd_cosine", "model.head.dropout=0", "model=timm",
              "model.backbone=vit_tiny_patch16_224",
              "+model.kwargs={img_size: 32, patch_size: 8, depth: 1, embed_dim: 48, num_heads: 2}"]
DDP = ["trainer=ddp", "trainer.devices=2", "data.batch_size=16"]
# Float sums are reduced in another order across 2 processes: agreement to 1e-5, not bit for bit.
TOLERANCE = 1e-5


def _train(results: Path, *extra: str) -> Path:
    proc = run_cli("train.py", f"paths.results_dir={results}", *SAME_MODEL, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted((results / "siamese_shapes").iterdir())
    assert len(runs) == 1, f"one run folder expected, got {runs}"
    return runs[0]


def _state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    single = _train(tmp_path_factory.mktemp("single"))
    ddp = _train(tmp_path_factory.mktemp("ddp"), *DDP)
    return single, ddp


def test_ddp_trains_the_same_model(runs):
    single, ddp = (_state(run) for run in runs)
    assert single["global_step"] == ddp["global_step"] == 16
    for key, value in single["state_dict"].items():
        torch.testing.assert_close(ddp["state_dict"][key].float(), value.float(), rtol=TOLERANCE, atol=TOLERANCE, msg=key)


def test_ddp_metrics_equal_single_process(runs):
    single, ddp = (json.loads((run / "results" / "metrics.json").read_text()) for run in runs)
    for stage in ("fit", "test"):
        for key, value in single[stage].items():
            if key.startswith(("val/", "test/")):
                assert ddp[stage][key] == pytest.approx(value, abs=TOLERANCE), key
    history = json.loads((runs[1] / "results" / "metrics_history.json").read_text())
    assert [row["epoch"] for row in history] == [0, 1]


def test_only_rank_zero_writes_the_run_folder(runs):
    _, ddp = runs
    assert (ddp / ".hydra" / "config.pickle").is_file()
    assert not list(ddp.glob("*/*rank*")), "no per-rank files"
    (log,) = ddp.glob("*.log")
    assert log.name == "train.log"


@pytest.mark.slow
def test_ddp_resume_continues_in_the_same_folder(tmp_path):
    results = tmp_path / "results"
    run = _train(results, *DDP, "trainer.max_epochs=1")
    assert _state(run)["epoch"] == 0
    proc = run_cli("train.py", f"resume={run}", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted((results / "siamese_shapes").iterdir()) == [run]
    assert _state(run)["epoch"] == 1 and _state(run)["global_step"] == 16
    assert "Initializing distributed: GLOBAL_RANK: 1" in proc.stdout + proc.stderr
