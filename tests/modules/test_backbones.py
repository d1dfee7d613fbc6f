"""Backbones from timm by name: config nodes reach timm as plain Python."""

import torch
from omegaconf import OmegaConf

from pipeline.modules.backbones import create_backbone


def test_list_kwargs_from_a_config_reach_timm_as_lists():
    kwargs = OmegaConf.create({"depths": [1, 1, 1, 1], "dims": [8, 8, 16, 16]})
    model = create_backbone("convnext_atto", **kwargs)
    assert model.num_features == 16
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 16)


def test_group_norm_simple_cnn_scores_each_sample_alone():
    model = create_backbone("simple_cnn", norm="group").train()
    batch = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(model(batch)[:1], model(batch[:1]), rtol=1e-5, atol=1e-6)
