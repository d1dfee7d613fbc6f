"""Each loss against a hand computation on a tiny batch."""

from __future__ import annotations

import math

import pytest
import torch

from pipeline.modules.losses import (
    CombinedLoss,
    CrossEntropyLoss,
    FocalLoss,
    SoftF1Loss,
    balanced_class_weights,
)
from pipeline.utils.errors import UserError

LOGITS = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
TARGET = torch.tensor([0, 2])


def _softmax_p(logits, target):
    return [math.exp(row[t]) / sum(math.exp(v) for v in row) for row, t in zip(logits.tolist(), target.tolist())]


def test_cross_entropy_multiclass_and_weights():
    p = _softmax_p(LOGITS, TARGET)
    assert CrossEntropyLoss()(LOGITS, TARGET).item() == pytest.approx(-(math.log(p[0]) + math.log(p[1])) / 2, rel=1e-5)
    w = [1.0, 1.0, 3.0]
    expected = -(1.0 * math.log(p[0]) + 3.0 * math.log(p[1])) / 4.0
    assert CrossEntropyLoss(weight=w)(LOGITS, TARGET).item() == pytest.approx(expected, rel=1e-5)


def test_label_smoothing_multiclass_and_binary():
    s = 0.1
    logp = torch.log_softmax(LOGITS, 1)
    soft = torch.full_like(LOGITS, s / 3)
    soft[0, 0] += 1 - s
    soft[1, 2] += 1 - s
    expected = -(soft * logp).sum(1).mean().item()
    assert CrossEntropyLoss(label_smoothing=s)(LOGITS, TARGET).item() == pytest.approx(expected, rel=1e-5)
    z, y = torch.tensor([1.0]), torch.tensor([1.0])
    t = 1 - s / 2
    sig = 1 / (1 + math.exp(-1.0))
    assert CrossEntropyLoss(label_smoothing=s)(z, y).item() == pytest.approx(-(t * math.log(sig) + (1 - t) * math.log(1 - sig)), rel=1e-5)


def test_binary_bce_with_class_weights():
    z, y = torch.tensor([0.3, -1.2]), torch.tensor([1.0, 0.0])
    l1 = -math.log(1 / (1 + math.exp(-0.3)))
    l0 = -math.log(1 - 1 / (1 + math.exp(1.2)))
    assert CrossEntropyLoss()(z, y).item() == pytest.approx((l1 + l0) / 2, rel=1e-5)
    assert CrossEntropyLoss(weight=[1.0, 4.0])(z, y).item() == pytest.approx((4 * l1 + l0) / 5, rel=1e-5)


def test_focal_multiclass_and_binary():
    p = _softmax_p(LOGITS, TARGET)
    expected = sum(-((1 - q) ** 2) * math.log(q) for q in p) / 2
    assert FocalLoss(gamma=2)(LOGITS, TARGET).item() == pytest.approx(expected, rel=1e-5)
    assert FocalLoss(gamma=0)(LOGITS, TARGET).item() == pytest.approx(CrossEntropyLoss()(LOGITS, TARGET).item(), rel=1e-6)
    z, y = torch.tensor([0.8]), torch.tensor([0.0])
    q = 1 - 1 / (1 + math.exp(-0.8))
    assert FocalLoss(gamma=2, alpha=0.25)(z, y).item() == pytest.approx(0.75 * -((1 - q) ** 2) * math.log(q), rel=1e-5)


def test_soft_f1_on_confident_predictions():
    perfect = torch.tensor([[20.0, -20.0], [-20.0, 20.0]])
    assert SoftF1Loss()(perfect, torch.tensor([0, 1])).item() == pytest.approx(0.0, abs=1e-6)
    probs = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    # each class: tp=.5, fp=.5, fn=.5 -> F1 = 1/2
    assert SoftF1Loss()(probs.log(), torch.tensor([0, 1])).item() == pytest.approx(0.5, rel=1e-5)


def test_balanced_weights_and_combined():
    torch.testing.assert_close(balanced_class_weights([10, 30, 0]), torch.tensor([40 / 30, 40 / 90, 0.0]))
    ce = CrossEntropyLoss(weight="balanced")
    combined = CombinedLoss({"ce": ce, "f1": SoftF1Loss()}, {"ce": 1.0, "f1": 0.5})
    combined.set_class_counts([1, 1, 2])
    expected = ce(LOGITS, TARGET) + 0.5 * SoftF1Loss()(LOGITS, TARGET)
    assert combined(LOGITS, TARGET).item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(UserError, match="hyp.loss.weight"):
        CrossEntropyLoss(weight="inverse")
    with pytest.raises(UserError, match="3 classes"):
        CrossEntropyLoss(weight=[1.0, 2.0])(LOGITS, TARGET)
