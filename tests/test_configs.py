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


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_precision_is_bf16_only_where_the_device_computes_it_natively(monkeypatch, native, expected):
    from omegaconf import OmegaConf

    from pipeline.trainers import engine

    monkeypatch.setattr(engine, "native_bf16", lambda accelerator: native)
    trainer = OmegaConf.create({"precision": "auto", "accelerator": "cpu"})
    engine.resolve_precision(trainer)
    assert trainer.precision == expected  # the run's saved config records the choice
    explicit = OmegaConf.create({"precision": "32-true", "accelerator": "cpu"})
    engine.resolve_precision(explicit)
    assert explicit.precision == "32-true"
