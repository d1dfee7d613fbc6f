"""PR/ROC curves of classifiers and ROC/DET curves of verification against hand-counted ones on tiny examples."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.callbacks.curves import ClassificationCurves, VerificationCurves, class_curves

TARGET = torch.tensor([0, 0, 1, 2, 1])
PROBS = torch.tensor([[0.9, 0.05, 0.05], [0.4, 0.5, 0.1], [0.6, 0.3, 0.1], [0.1, 0.2, 0.7], [0.3, 0.6, 0.1]])


def counted(scores: torch.Tensor, truth: torch.Tensor) -> list[tuple[float, float, float, float]]:
    """(recall, precision, fpr, tpr) at every distinct score taken as the threshold (accept score >= t), by counting."""
    points = []
    for t in sorted(set(scores.tolist()), reverse=True):
        accepted = scores >= t
        tp, fp = int((accepted & truth).sum()), int((accepted & ~truth).sum())
        positives, negatives = int(truth.sum()), int((~truth).sum())
        points.append((tp / positives, tp / (tp + fp), fp / negatives, tp / positives))
    return points


def test_class_curves_equal_counting_at_every_threshold():
    curves, absent = class_curves(PROBS, TARGET, ["a", "b", "c"])
    assert absent == [] and [c.name for c in curves] == ["a", "b", "c"]
    for index, curve in enumerate(curves):
        points = counted(PROBS[:, index], TARGET == index)
        # torchmetrics orders PR points by rising threshold and ends on (recall 0, precision 1); ROC starts at (0, 0).
        pr = sorted(zip(curve.recall[:-1].tolist(), curve.precision[:-1].tolist()))
        assert np.array(pr) == pytest.approx(np.array(sorted((r, p) for r, p, _, _ in points)))
        assert np.c_[curve.fpr, curve.tpr] == pytest.approx(np.array([(0, 0)] + [(f, t) for *_, f, t in points]))
    # Class a by hand: positives 0.9 and 0.4 against 0.6, 0.3, 0.1.
    a = curves[0]
    assert a.auc == pytest.approx(5 / 6)  # 0.9 beats the three negatives, 0.4 two of them
    assert a.ap == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)  # precision 1 at recall 0.5, 2/3 at recall 1


def test_a_class_absent_from_the_split_has_no_curve():
    probs = torch.cat([PROBS, torch.zeros(5, 1)], 1)
    curves, absent = class_curves(probs, TARGET, ["a", "b", "c", "d"])
    assert absent == ["d"] and [c.name for c in curves] == ["a", "b", "c"]


def test_verification_figure_marks_the_eer_point_counted_by_hand(tmp_path):
    """Genuine 0.9, 0.8, 0.3 against impostors 0.1, 0.2, 0.35, 0.7: at 0.7 one impostor of four is accepted and one
    genuine of three rejected, the closest FPR and FNR get (0.25 and 1/3), so EER (0.25 + 1/3) / 2 at 0.7."""
    trainer, module = stub_trainer(), SimpleNamespace()
    callback = VerificationCurves(str(tmp_path))
    callback.keep(trainer, module, {"preds": torch.tensor([0.9, 0.1, 0.8, 0.2, 0.35, 0.3, 0.7]),
                                    "target": torch.tensor([1, 0, 1, 0, 0, 1, 0])})
    callback.draw(trainer, module, "test", callback.collect(trainer, module, "test"))
    info = Image.open(tmp_path / "test_roc_det.png").info
    assert info["Title"] == "test (epoch 0)"  # the last trained epoch of a trainer at its epoch 1
    assert f"pairs: EER {(0.25 + 1 / 3) / 2:.4f} at 0.7000" in info["Description"]


def stub_trainer(epoch: int = 1):
    return SimpleNamespace(loggers=[], current_epoch=epoch, global_step=10, ckpt_path=None, sanity_checking=False)


def test_classification_figure_is_titled_with_the_epoch(tmp_path):
    trainer = stub_trainer()
    module = SimpleNamespace(data_info=SimpleNamespace(class_names=["a", "b", "c"]))
    classification = ClassificationCurves(str(tmp_path))
    classification.keep(trainer, module, {"preds": PROBS, "target": TARGET})
    classification.draw(trainer, module, "val", classification.collect(trainer, module, "val"))
    assert Image.open(tmp_path / "val_pr_roc_curves.png").info["Title"] == "val (epoch 1)"
