"""``hyp.freeze_backbone_epochs`` under DDP: the frozen, then unfrozen backbone trains as in one process.

DDP registers only the parameters that require a gradient when it wraps the model, after the callbacks'
``setup``; a backbone frozen through ``requires_grad`` there and unfrozen later would train on each rank's own
gradients (never averaged), its weights drifting apart. ``FreezeBackbone`` keeps it in DDP's graph and drops
its averaged gradients while frozen instead (pipeline/callbacks/finetune.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY_SIAMESE, compose_config, run_cli

from pipeline.modules.backbones import create_backbone

# tests/trainers/test_scale_ddp.py's model: GroupNorm, float64, SGD, no dropout, so 2 x 16 items per step
# equal 1 x 32 within its tolerance.
SAME_MODEL = [*TINY_SIAMESE, "hyp=sgd_cosine", "hyp.scheduler.T_max=2", "trainer.precision=64-true",
              "model.head.dropout=0", "+model.kwargs={norm: group}", "hyp.freeze_backbone_epochs=1",
              "hyp.backbone_lr_mult=0.5"]
DDP = ["trainer=ddp", "trainer.devices=2", "data.batch_size=16"]
TOLERANCE = 1e-5  # tests/trainers/test_scale_ddp.py


def _train(results: Path, *extra: str) -> Path:
    proc = run_cli("train.py", f"paths.results_dir={results}", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (results / "siamese_shapes").iterdir()
    return run


def _state(run: Path) -> dict:
    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


@pytest.mark.slow  # three trainings, two of them with 2 DDP processes
def test_freeze_then_unfreeze_under_ddp_equals_one_process_and_resumes(tmp_path, data_dir):
    cfg = compose_config(["experiment=siamese_shapes", "+model.kwargs={norm: group}"], tmp_path / "x")
    torch.manual_seed(5)
    encoder = create_backbone(cfg.model.backbone, **cfg.model.kwargs)
    weights = tmp_path / "encoder.pth"
    torch.save(encoder.state_dict(), weights)
    common = [*SAME_MODEL, f"model.init_from={weights}", f"paths.data_dir={data_dir}"]

    single = _train(tmp_path / "single", *common, "trainer.max_epochs=2")
    # DDP: the frozen epoch, then resumed in the same folder for the unfrozen one (unfreezing after DDP wrapped it).
    ddp = _train(tmp_path / "ddp", *common, *DDP, "trainer.max_epochs=1")
    frozen = _state(ddp)
    for key, value in encoder.state_dict().items():
        assert torch.equal(frozen["state_dict"][f"net.encoder.{key}"], value.to(frozen["state_dict"][f"net.encoder.{key}"].dtype)), key
    assert _train(tmp_path / "ddp", f"resume={ddp}", "trainer.max_epochs=2") == ddp

    a, b = _state(single), _state(ddp)
    assert a["epoch"] == b["epoch"] == 1 and a["global_step"] == b["global_step"] == 16
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key].double(), value.double(), rtol=TOLERANCE, atol=TOLERANCE, msg=key)
    trained = [k for k, v in encoder.state_dict().items() if not torch.allclose(a["state_dict"][f"net.encoder.{k}"].double(), v.double())]
    assert trained, "the encoder trains once unfrozen"
