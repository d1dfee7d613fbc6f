"""Every experiment and every group option composes; configs name real classes."""

from __future__ import annotations

import pytest
from conftest import CONFIG_DIR, EXPERIMENTS, compose_config
from hydra.utils import get_class

GROUP_OPTIONS = [
    f"{group}={path.stem}"
    for group in ("model", "hyp", "trainer", "callbacks", "logger", "debug")
    for path in sorted((CONFIG_DIR / group).glob("*.yaml"))
    if path.stem != "default" or group == "hyp"
]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes(experiment, tmp_path):
    cfg = compose_config([f"experiment={experiment}"], tmp_path / "run")
    assert cfg.name == experiment
    for node in (cfg.data, cfg.task, cfg.trainer):
        assert get_class(node._target_) is not None
    assert cfg.trainer.max_epochs >= 1 and "epochs" not in cfg.hyp and "precision" not in cfg.hyp
    assert cfg.callbacks.model_checkpoint.monitor == cfg.task.monitor


@pytest.mark.parametrize("override", GROUP_OPTIONS)
def test_group_option_composes(override, tmp_path):
    overrides = [override] + (["model.backbone=resnet18"] if override == "model=timm" else [])
    cfg = compose_config(overrides, tmp_path / "run")
    assert cfg.hyp.optimizer._partial_ is True
    assert "_target_" in cfg.hyp.loss


def test_focal_preset_changes_only_the_loss(tmp_path):
    base = compose_config([], tmp_path / "a")
    focal = compose_config(["hyp=focal"], tmp_path / "b")
    assert focal.hyp.loss._target_.endswith("FocalLoss")
    assert focal.trainer.max_epochs == base.trainer.max_epochs and focal.hyp.optimizer == base.hyp.optimizer
