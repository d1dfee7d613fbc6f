"""Backbones from timm by name: config nodes reach timm as plain Python."""

import torch
from omegaconf import OmegaConf

from pipeline.modules.backbones import backbone_from, create_backbone


def test_list_kwargs_from_a_config_reach_timm_as_lists():
    kwargs = OmegaConf.create({"depths": [1, 1, 1, 1], "dims": [8, 8, 16, 16]})
    model = create_backbone("convnext_atto", **kwargs)
    assert model.num_features == 16
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 16)


def test_group_norm_simple_cnn_scores_each_sample_alone():
    model = create_backbone("simple_cnn", norm="group").train()
    batch = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(model(batch)[:1], model(batch[:1]), rtol=1e-5, atol=1e-6)


def test_a_model_config_names_its_backbone_and_the_keyword_arguments_for_timm():
    model = OmegaConf.create({"backbone": "convnext_atto", "pretrained": False, "weights": None,
                              "kwargs": {"depths": [1, 1, 1, 1], "dims": [8, 8, 16, 24]}, "head": {"hidden_dims": [4]}})
    backbone = backbone_from(model)
    assert backbone.num_features == 24 and backbone(torch.rand(1, 3, 32, 32)).shape == (1, 24)
    assert backbone_from(OmegaConf.create({"backbone": "simple_cnn"})).num_features == create_backbone("simple_cnn").num_features
