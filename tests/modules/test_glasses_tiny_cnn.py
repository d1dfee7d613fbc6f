"""glasses_cnn: size, timm conventions and ONNX parity."""

import warnings

import numpy as np
import onnxruntime as ort
import pytest
import timm
import torch

from pipeline.modules.tiny_cnn import GlassesCNN


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_budget():
    assert 150_000 < _count(GlassesCNN()) <= 200_000
    assert len([m for m in GlassesCNN().modules() if isinstance(m, torch.nn.Conv2d)]) == 7


def test_timm_create_model_logits_and_config():
    model = timm.create_model("glasses_cnn", num_classes=2, pretrained=False)
    assert isinstance(model, GlassesCNN)
    assert model.pretrained_cfg["input_size"] == (3, 82, 82)
    assert timm.data.resolve_data_config({}, model=model)["input_size"] == (3, 82, 82)
    x = torch.randn(3, 3, 82, 82)
    assert model(x).shape == (3, 2)
    assert model.forward_features(x).shape == (3, 128, 6, 6)


def test_num_classes_zero_gives_pooled_features():
    model = timm.create_model("glasses_cnn", num_classes=0).eval()
    x = torch.randn(2, 3, 82, 82)
    assert model.num_features == model.head_hidden_size == 128
    features = model(x)
    assert features.shape == (2, 128)
    torch.testing.assert_close(features, model.forward_features(x).mean((2, 3)))


def test_reset_classifier_and_pre_logits():
    model = timm.create_model("glasses_cnn", num_classes=2, drop_rate=0.3).eval()
    x = torch.randn(2, 3, 82, 82)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, 128)
    model.reset_classifier(5)
    assert model(x).shape == (2, 5)
    assert model.get_classifier()[-1].out_features == 5
    model.reset_classifier(0)
    assert model(x).shape == (2, 128)


def test_onnx_export_parity_and_size(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("glasses_cnn", num_classes=2).eval()
    path = tmp_path / "glasses.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            torch.zeros(1, 3, 82, 82),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
    assert path.stat().st_size <= 1_000_000
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((4, 3, 82, 82)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.from_numpy(x)).numpy()
    assert np.abs(session.run(None, {"image": x})[0] - expected).max() < 1e-4


@pytest.mark.parametrize("size", [64, 120])
def test_other_input_sizes(size):
    assert GlassesCNN()(torch.randn(1, 3, size, size)).shape == (1, 2)
