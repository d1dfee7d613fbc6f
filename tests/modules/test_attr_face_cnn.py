"""The face_cnn backbone: registered in timm, pooled features, 16x downsampling."""

import torch

from pipeline.modules.backbones import create_backbone
from pipeline.modules.small_cnn import FaceCNN


def test_face_cnn_is_a_timm_backbone():
    model = create_backbone("face_cnn")
    features = model(torch.randn(2, 3, 96, 72))
    assert features.shape == (2, model.num_features) == (2, 128)
    assert FaceCNN(widths=(8, 16, 16)).forward_features(torch.randn(1, 3, 96, 72)).shape == (1, 16, 24, 18)
    assert model.forward_features(torch.randn(1, 3, 96, 72)).shape[-2:] == (6, 4)
