"""Speed switches take effect: precision, channels_last, torch.compile, accumulation, clipping, EMA, throughput."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import pytest
import torch
from conftest import TINY_SIAMESE, compose_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from pipeline.callbacks.throughput import Throughput
from pipeline.runs.run import build_datamodule, build_task
from pipeline.trainers.engine import build_trainer, train


def _setup(tmp_path, *overrides: str):
    cfg = compose_config([*TINY_SIAMESE, *overrides], tmp_path / "run")
    datamodule = build_datamodule(cfg)
    return cfg, datamodule, build_task(cfg, datamodule.info)


def _fit(cfg, datamodule, task, callbacks=(), **trainer_args) -> pl.Trainer:
    options = dict(max_steps=4, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
                   enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer = build_trainer(cfg, callbacks=list(callbacks), **{**options, **trainer_args})
    trainer.fit(task, datamodule=datamodule)
    return trainer


def _first_conv(task) -> torch.nn.Conv2d:
    return next(m for m in task.net.modules() if isinstance(m, torch.nn.Conv2d))


def test_channels_last_converts_weights_and_inputs(tmp_path):
    cfg, datamodule, task = _setup(tmp_path, "hyp.channels_last=true")
    seen = []
    _first_conv(task).register_forward_hook(lambda m, args, out: seen.append(args[0]))
    _fit(cfg, datamodule, task, max_steps=1)
    assert _first_conv(task).weight.is_contiguous(memory_format=torch.channels_last)
    assert seen and all(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous() for x in seen)


def test_compile_wraps_the_network_in_place(tmp_path):
    _, _, task = _setup(tmp_path, "hyp.compile=true")
    keys = set(task.state_dict())
    task.setup("fit")
    assert task.net._compiled_call_impl is not None
    assert set(task.state_dict()) == keys, "checkpoint keys unchanged (no _orig_mod prefix)"


@pytest.mark.parametrize("precision,dtype", [("bf16-mixed", torch.bfloat16), ("32-true", torch.float32)])
def test_precision_sets_the_compute_dtype(tmp_path, precision, dtype):
    cfg, datamodule, task = _setup(tmp_path, f"trainer.precision={precision}")
    seen = []
    _first_conv(task).register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    _fit(cfg, datamodule, task, max_steps=1)
    assert set(seen) == {dtype}
    assert _first_conv(task).weight.dtype == torch.float32, "master weights stay float32"


def test_accumulation_steps_the_optimizer_once_per_n_batches(tmp_path):
    cfg, datamodule, task = _setup(tmp_path, "trainer.accumulate_grad_batches=2")
    trainer = _fit(cfg, datamodule, task, max_steps=-1, max_epochs=1, limit_train_batches=6)
    assert trainer.global_step == 3


class GradNorms(pl.Callback):
    """Total gradient norm as the optimiser used it (zero_grad comes after clipping and the step)."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_before_zero_grad(self, trainer, pl_module, optimizer) -> None:
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if grads:
            self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))


@pytest.mark.parametrize("clip", [None, 0.01])
def test_gradient_clipping_bounds_the_norm(tmp_path, clip):
    cfg, datamodule, task = _setup(tmp_path, f"trainer.gradient_clip_val={clip if clip else 'null'}")
    norms = GradNorms()
    _fit(cfg, datamodule, task, callbacks=[norms])
    assert len(norms.norms) >= 3
    if clip:
        assert max(norms.norms) <= clip * (1 + 1e-4)
    else:
        assert max(norms.norms) > 0.01, "unclipped gradients are larger: the clipped case is a real test"


def test_ema_weights_are_validated_and_saved(tmp_path, data_dir):
    cfg = compose_config([*TINY_SIAMESE, "trainer.max_epochs=1", "callbacks=ema", "callbacks.ema.decay=0.5", "logger=none",
                          "test_after_train=false"], tmp_path / "run", data_dir)
    train(cfg)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    ema, raw = ckpt["state_dict"], ckpt["current_model_state"]
    assert any(not torch.equal(ema[k], raw[k]) for k in ema if k.endswith("weight"))
    logged = json.loads((tmp_path / "run" / "results" / "metrics_history.json").read_text())[-1]["val/loss"]
    datamodule = build_datamodule(cfg)

    def val_loss(state: dict) -> float:
        task = build_task(cfg, datamodule.info)
        task.load_state_dict(state)
        trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
        return trainer.validate(task, datamodule=datamodule, verbose=False)[0]["val/loss"]

    assert val_loss(ema) == pytest.approx(logged, abs=1e-5)
    assert val_loss(raw) != pytest.approx(logged, abs=1e-5)


def test_throughput_is_logged_per_epoch(tmp_path, data_dir):
    cfg = compose_config([*TINY_SIAMESE, "trainer.max_epochs=2", "test_after_train=false"], tmp_path / "run", data_dir)
    train(cfg)
    scalars: dict[str, list[float]] = {}
    for events in (tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events)).Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
    for tag in ("samples_per_sec", "data_wait_fraction", "step_ms", "peak_memory_mb"):
        values = scalars[f"train/speed/{tag}"]
        assert len(values) == 2 and all(v > 0 for v in values), tag
    assert all(0 < v < 1 for v in scalars["train/speed/data_wait_fraction"])


def test_throughput_counts_samples_and_splits_time():
    callback = Throughput()
    callback.samples, callback.steps, callback.wait_s, callback.compute_s = 640, 10, 1.0, 3.0
    figures = callback.summary(world_size=2, device=torch.device("cpu"))
    assert figures["train/speed/samples_per_sec"] == pytest.approx(320)
    assert figures["train/speed/data_wait_fraction"] == pytest.approx(0.25)
    assert figures["train/speed/step_ms"] == pytest.approx(400)
    assert figures["train/speed/peak_memory_mb"] > 10
