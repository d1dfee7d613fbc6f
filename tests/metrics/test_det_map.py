"""Detection metrics against hand-computed COCO AP and greedy P/R/F1."""

from __future__ import annotations

import pytest
import torch

from pipeline.metrics.detection import MISSING, DetectionMetrics, PrecisionRecallF1, greedy_match

# COCO AP is the mean over 101 recall points of the best precision at recall >= that point.
# Class "a": detections by score: TP (IoU 1), FP, TP at IoU 0.62, for 2 ground-truth boxes.
#   IoU threshold <= 0.6: precision 1 up to recall 0.5 (51 points), 2/3 up to 1.0 (50 points).
#   IoU threshold >= 0.65 (7 of the 10): the third detection misses, precision 1 up to recall 0.5.
AP50_A = (51 + 50 * 2 / 3) / 101
AP_A = (3 * AP50_A + 7 * 51 / 101) / 10
# Class "b": one exact detection for 2 ground-truth boxes, at every IoU threshold.
AP_B = 51 / 101


def _hand_example():
    preds = [
        {
            "boxes": torch.tensor([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 26.2], [40, 0, 60, 20]]),
            "scores": torch.tensor([0.9, 0.8, 0.7, 0.6]),
            "labels": torch.tensor([0, 0, 0, 1]),
        },
        {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    targets = [
        {
            "boxes": torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30], [40, 0, 60, 20]]),
            "labels": torch.tensor([0, 0, 1]),
        },
        {"boxes": torch.tensor([[0.0, 0, 20, 20]]), "labels": torch.tensor([1])},
    ]
    return preds, targets


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_map_matches_hand_computation(backend):
    metrics = DetectionMetrics(["a", "b", "c"], score_threshold=0.5, backend=backend)
    metrics.update(*_hand_example())
    out = metrics.compute()
    assert out["ap50/a"] == pytest.approx(AP50_A, abs=1e-4)
    assert out["ap/a"] == pytest.approx(AP_A, abs=1e-4)
    assert out["ap50/b"] == pytest.approx(AP_B, abs=1e-4) and out["ap/b"] == pytest.approx(AP_B, abs=1e-4)
    assert out["map_50"] == pytest.approx((AP50_A + AP_B) / 2, abs=1e-4)
    assert out["map"] == pytest.approx((AP_A + AP_B) / 2, abs=1e-4)
    assert out["ap/c"] == MISSING and out["ap50/c"] == MISSING


def test_precision_recall_f1_match_hand_computation():
    metrics = DetectionMetrics(["a", "b", "c"], score_threshold=0.5)
    metrics.update(*_hand_example())
    out = metrics.compute()
    # a: 2 TP (IoU 1 and 0.62 >= 0.5), 1 FP, 0 FN.  b: 1 TP, 0 FP, 1 FN.  c: nothing.
    assert (out["precision/a"], out["recall/a"], out["f1/a"]) == pytest.approx((2 / 3, 1.0, 0.8))
    assert (out["precision/b"], out["recall/b"], out["f1/b"]) == pytest.approx((1.0, 0.5, 2 / 3))
    assert (out["precision/c"], out["recall/c"], out["f1/c"]) == (0.0, 0.0, 0.0)
    assert out["f1"] == pytest.approx((0.8 + 2 / 3) / 2)


def test_score_threshold_removes_low_scoring_detections():
    metric = PrecisionRecallF1(num_classes=3, score_threshold=0.65)
    metric.update(*_hand_example())
    out = metric.compute()
    assert (
        out["recall"][1] == 0.0 and out["precision"][1] == 0.0 and out["precision"][0] == pytest.approx(2 / 3)
    )


def test_greedy_match_serves_higher_scores_first_and_falls_back_to_free_boxes():
    gt = torch.tensor([[0.0, 0, 10, 10], [0, 2, 10, 12]])
    # the first detection overlaps both boxes; once box 0 is taken the second still matches box 1
    preds = torch.tensor([[0.0, 1, 10, 11], [0, 0, 10, 10], [100, 100, 110, 110]])
    assert greedy_match(preds, torch.tensor([0.9, 0.8, 0.7]), gt, 0.5).tolist() == [True, True, False]
    # one box, two candidates: the higher score wins even with the lower IoU
    one = gt[:1]
    loose, tight = [0.0, 0, 10, 14], [0.0, 0, 10, 10]
    assert greedy_match(torch.tensor([loose, tight]), torch.tensor([0.9, 0.5]), one, 0.5).tolist() == [
        True,
        False,
    ]
    assert greedy_match(torch.zeros(0, 4), torch.zeros(0), one, 0.5).tolist() == []


def test_reset_clears_state():
    metrics = DetectionMetrics(["a", "b"])
    metrics.update(*_hand_example())
    metrics.reset()
    preds, targets = _hand_example()
    metrics.update(preds[:1], targets[:1])
    assert metrics.compute()["recall/b"] == 1.0
