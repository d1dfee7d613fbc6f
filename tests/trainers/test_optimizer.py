"""``hyp.optimizer``: the shipped AdamW and SGD groups step with torch's fused kernels, which give the update of
torch's own per-tensor loop; fused is turned off where Lightning cannot clip with it; a key an optimiser does not
take, or a device without fused kernels, is one line naming the key."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision, Precision
from omegaconf import OmegaConf

from pipeline.trainers.base import build_optimizer
from pipeline.utils.errors import UserError

GROUPS = Path(__file__).parents[2] / "configs" / "hyp" / "optimizer"


def params_with_grads(seed: int = 0) -> list[torch.nn.Parameter]:
    generator = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(shape, generator=generator)) for shape in ((16, 3, 3, 3), (16,), (2, 16))]
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator)
    return params


@pytest.mark.parametrize("group", ["adamw", "sgd"])
def test_the_shipped_optimisers_are_fused_and_step_as_torchs_per_tensor_loop(group):
    options = OmegaConf.load(GROUPS / f"{group}.yaml")
    fused_params, loop_params = params_with_grads(), params_with_grads()
    fused = build_optimizer(options, fused_params)
    kwargs = {k: v for k, v in OmegaConf.to_container(options).items() if k not in ("_target_", "_partial_", "fused")}
    loop = getattr(torch.optim, str(options._target_).rsplit(".", 1)[1])(loop_params, foreach=False, **kwargs)
    assert fused.defaults["fused"] is True and not loop.defaults.get("fused")
    for _ in range(3):
        fused.step()
        loop.step()
    for a, b, start in zip(fused_params, loop_params, params_with_grads(), strict=True):
        assert not torch.equal(a, start)  # it moved
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("clip", "plugin", "fused"), [
    (1.0, MixedPrecision("bf16-mixed", "cpu"), False),  # Lightning refuses to clip with a fused optimiser here
    (None, MixedPrecision("bf16-mixed", "cpu"), True),
    (1.0, Precision(), True),
])
def test_fused_is_turned_off_only_where_lightning_clips_under_mixed_precision(clip, plugin, fused):
    trainer = SimpleNamespace(gradient_clip_val=clip, precision_plugin=plugin, precision="bf16-mixed")
    optimizer = build_optimizer(OmegaConf.load(GROUPS / "adamw.yaml"), params_with_grads(), trainer)
    assert bool(optimizer.defaults["fused"]) is fused


def test_an_optimiser_without_the_key_is_one_line_naming_it():
    options = OmegaConf.merge(OmegaConf.load(GROUPS / "adamw.yaml"), {"_target_": "torch.optim.RAdam"})
    with pytest.raises(UserError, match=r"hyp\.optimizer\.fused: torch\.optim\.RAdam does not take 'fused'.*~hyp\.optimizer\.fused"):
        build_optimizer(options, params_with_grads())


def test_a_device_without_fused_kernels_is_one_line_saying_fused_false():
    params = [torch.nn.Parameter(torch.empty(4, device="meta"))]
    with pytest.raises(UserError, match=r"hyp\.optimizer\.fused: no fused kernels on meta.*hyp\.optimizer\.fused=false"):
        build_optimizer(OmegaConf.load(GROUPS / "adamw.yaml"), params)
