"""Per-class AP50 and AP50:95 of pipeline.metrics.detection_report against COCO's own evaluator
(faster-coco-eval, else pycocotools) on random detections; absent classes; the confusion matrix."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.metrics.detection_report import Image, confusion_matrix, evaluate

CLASSES = ["with_mask", "without_mask", "mask_weared_incorrect", "never_seen"]


def random_images(seed: int, n: int = 40, classes: int = 3) -> list[Image]:
    """Ground truth of the first ``classes`` classes; detections near them (jittered, some relabelled) plus clutter."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):
        k = rng.integers(0, 5)
        xy = rng.uniform(0, 200, (k, 2))
        gt = np.concatenate([xy, xy + rng.uniform(10, 60, (k, 2))], 1)
        gt_labels = rng.integers(0, classes, k)
        keep = rng.random(k) < 0.8
        boxes = gt[keep] + rng.normal(0, 5, (int(keep.sum()), 4))
        labels = np.where(rng.random(int(keep.sum())) < 0.85, gt_labels[keep], rng.integers(0, classes, int(keep.sum())))
        clutter = rng.integers(0, 4)
        cxy = rng.uniform(0, 200, (clutter, 2))
        boxes = np.concatenate([boxes, np.concatenate([cxy, cxy + rng.uniform(10, 60, (clutter, 2))], 1)])
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
        labels = np.concatenate([labels, rng.integers(0, classes, clutter)]).astype(int)
        images.append(Image(boxes, rng.random(len(boxes)), labels, gt, gt_labels.astype(int)))
    return images


def coco_per_class(images: list[Image], num_classes: int) -> tuple[dict[int, float], dict[int, float]]:
    """AP50 and AP50:95 per class with ground truth, by COCO's evaluator."""
    try:
        from faster_coco_eval import COCO
        from faster_coco_eval import COCOeval_faster as COCOeval
    except ImportError:
        COCO = pytest.importorskip("pycocotools.coco").COCO
        COCOeval = pytest.importorskip("pycocotools.cocoeval").COCOeval
    gt = {"images": [{"id": i + 1, "width": 300, "height": 300} for i in range(len(images))],
          "categories": [{"id": c + 1, "name": str(c)} for c in range(num_classes)], "annotations": []}
    dets = []
    for i, im in enumerate(images):
        for box, label in zip(im.gt_boxes, im.gt_labels, strict=True):
            w, h = box[2:] - box[:2]
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i + 1, "category_id": int(label) + 1,
                                      "bbox": [float(box[0]), float(box[1]), float(w), float(h)], "area": float(w * h), "iscrowd": 0})
        for box, score, label in zip(im.boxes, im.scores, im.labels, strict=True):
            w, h = box[2:] - box[:2]
            dets.append({"image_id": i + 1, "category_id": int(label) + 1, "score": float(score),
                         "bbox": [float(box[0]), float(box[1]), float(w), float(h)]})
    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    evaluator = COCOeval(coco, coco.loadRes(dets), "bbox")
    evaluator.evaluate()
    evaluator.accumulate()
    precision = evaluator.eval["precision"]  # [IoU, recall, class, area, max dets]
    ap50, ap = {}, {}
    for k, category in enumerate(evaluator.params.catIds):
        at50 = precision[0, :, k, 0, -1]
        if (at50 > -1).any():
            ap50[category - 1] = float(at50[at50 > -1].mean())
            every = precision[:, :, k, 0, -1]
            ap[category - 1] = float(every[every > -1].mean())
    return ap50, ap


@pytest.mark.parametrize("seed", [0, 1])
def test_per_class_ap_equals_coco(seed):
    images = random_images(seed)
    report = evaluate(images, CLASSES)
    ap50, ap = coco_per_class(images, len(CLASSES))
    assert set(ap50) == {0, 1, 2}
    for c in range(3):
        assert report.classes[c].ap50 == pytest.approx(ap50[c], abs=1e-3), CLASSES[c]
        assert report.classes[c].ap50_95 == pytest.approx(ap[c], abs=1e-3), CLASSES[c]
    absent = report.classes[3]
    assert absent.absent and absent.ap50 is None and absent.curve is None
    row = next(r for r in report.rows() if r["class"] == "never_seen")
    assert row["ap50"] == "absent" and row["instances"] == 0


def test_f1_curve_and_best_threshold():
    images = random_images(3)
    report = evaluate(images, CLASSES)
    best = int(np.argmax(report.f1))
    assert report.best_threshold == report.thresholds[best] and report.best_f1 == report.f1.max() > 0


def test_confusion_matrix_counts_by_hand():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], float)
    boxes = np.array([[0, 0, 10, 10], [20, 20, 30, 31], [80, 80, 90, 90], [50, 50, 60, 60]], float)
    image = Image(boxes, np.array([0.9, 0.8, 0.7, 0.1]), np.array([0, 0, 1, 1]), gt, np.array([0, 1, 1]))
    cm = confusion_matrix([image], 2, score_threshold=0.5)
    # Right class (0->0), wrong class (pred 0 for a true 1), a false box (pred 1, background), a missed box
    # (the true 1 at 50..60 whose detection scores under the threshold).
    expected = np.zeros((3, 3), int)
    expected[0, 0] = expected[0, 1] = expected[1, 2] = expected[2, 1] = 1
    np.testing.assert_array_equal(cm, expected)


def test_images_read_back_from_torchmetrics_state():
    """The callback reads the test metric's state (torchmetrics keeps boxes as xywh): same report as the inputs."""
    import torch
    from torchmetrics.detection import MeanAveragePrecision

    from pipeline.callbacks.detection_report import images_of

    images = random_images(4)
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox")
    metric.update([{"boxes": torch.tensor(i.boxes), "scores": torch.tensor(i.scores), "labels": torch.tensor(i.labels)} for i in images],
                  [{"boxes": torch.tensor(i.gt_boxes), "labels": torch.tensor(i.gt_labels)} for i in images])
    back = images_of(metric)
    for a, b in zip(images, back, strict=True):
        np.testing.assert_allclose(b.boxes, a.boxes, atol=1e-4)
        np.testing.assert_allclose(b.gt_boxes, a.gt_boxes, atol=1e-4)
