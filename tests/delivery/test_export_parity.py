"""Detection parity: detections compared with their counterparts in any order, not row by row."""

import numpy as np

from pipeline.delivery.answers import Detections


def _detections(boxes, scores, labels):
    return {"boxes": np.array(boxes, dtype=np.float32), "scores": np.array(scores, dtype=np.float32),
            "labels": np.array(labels)}


TORCH = _detections([[0, 0, 10, 10], [20, 20, 30, 30], [5, 5, 8, 8], [0, 0, 0, 0]],
                    [0.9, 0.5000001, 0.5, 0.0], [0, 1, 1, -1])


def test_tied_detections_in_another_order_match():
    swapped = _detections([[0, 0, 10, 10], [5, 5, 8, 8], [20, 20, 30.001, 30], [0, 0, 0, 0]],
                          [0.9, 0.5000001, 0.5, 0.0], [0, 1, 1, -1])
    worst = Detections.differences(TORCH, swapped)
    assert worst["labels"] == 0.0 and worst["scores"] < 1e-6 and abs(worst["boxes"] - 0.001) < 1e-4


def test_a_moved_box_or_a_missing_detection_is_reported():
    moved = _detections([[0, 0, 12, 10], [20, 20, 30, 30], [5, 5, 8, 8], [0, 0, 0, 0]],
                        [0.9, 0.5000001, 0.5, 0.0], [0, 1, 1, -1])
    assert Detections.differences(TORCH, moved)["boxes"] == 2.0
    missing = _detections([[20, 20, 30, 30], [5, 5, 8, 8], [0, 0, 0, 0], [0, 0, 0, 0]],
                          [0.5000001, 0.5, 0.0, 0.0], [1, 1, -1, -1])
    assert Detections.differences(TORCH, missing)["labels"] == 1.0
