"""DetectionTask from the real configs: loss components, epoch metrics, drawn examples, ONNX parity, folder prediction."""

from __future__ import annotations

import csv
import shutil

import cv2
import numpy as np
import pytest
import torch
from conftest import compose_config, predict_files
from torchvision.models.detection import FCOS, RetinaNet

from pipeline.runs.run import build_datamodule, build_task
from pipeline.trainers.detection import DetectionTask, resolve_class_weights
from pipeline.utils.errors import UserError

TINY = ["experiment=facemask_detection", "data.image_size=96", "data.synthetic.num_images=24",
        "data.synthetic.image_size=96", "data.num_workers=0", "hyp.batch_size=4"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(datamodule, task) from the experiment config; min_score 0 so an untrained model still returns boxes."""
    tmp = tmp_path_factory.mktemp("det_task")
    cfg = compose_config([*TINY, "model.min_score=0.0", "model.detections_per_img=20", "task.class_weights=balanced"],
                         tmp / "run", tmp / "data")
    datamodule = build_datamodule(cfg)
    torch.manual_seed(0)
    return datamodule, build_task(cfg, datamodule.info)


def test_balanced_class_weights():
    assert resolve_class_weights("balanced", [60, 30, 10], 3) == pytest.approx([100 / 180, 100 / 90, 100 / 30], abs=1e-4)
    assert resolve_class_weights([1, 2, 3], None, 3) == [1.0, 2.0, 3.0]
    assert resolve_class_weights(None, [1, 2, 3], 3) is None
    with pytest.raises(UserError, match="task.class_weights"):
        resolve_class_weights("inverse", [1, 2, 3], 3)


def test_task_uses_balanced_weights_of_the_training_split(built):
    datamodule, task = built
    weights = task.net.head.class_weights
    assert weights.tolist() == pytest.approx(resolve_class_weights("balanced", datamodule.info.class_counts, 3))
    assert weights[2] > weights[0]


def test_detector_settings_come_from_the_model_group(built, tmp_path):
    """model=retinanet / model.min_stride / model.min_score reach the built detector; the task keeps its own."""
    datamodule, task = built
    assert isinstance(task.net, FCOS) and task.net.score_thresh == 0.0 and task.net.detections_per_img == 20
    cfg = compose_config([*TINY, "model=retinanet", "model.min_stride=4", "model.nms_threshold=0.3"],
                         tmp_path / "run", tmp_path / "data")
    other = build_task(cfg, datamodule.info)
    assert isinstance(other.net, RetinaNet) and other.net.nms_thresh == 0.3
    assert len(other.net.anchor_generator.sizes) == 6  # P2-P7
    assert "detector" not in cfg.task and cfg.task.score_threshold == 0.5


def test_training_step_logs_each_loss_component(built):
    datamodule, task = built
    logged = {}
    task.log = lambda name, value, **kw: logged.__setitem__(name, value)
    task.log_dict = lambda values, **kw: logged.update(values)
    task.train()
    loss = task.training_step(next(iter(datamodule.train_dataloader())), 0)
    loss.backward()
    assert torch.isfinite(loss)
    assert {"train/loss", "train/loss_classification", "train/loss_bbox_regression", "train/loss_bbox_ctrness"} <= set(logged)
    assert float(loss) == pytest.approx(sum(float(logged[k]) for k in logged if k.startswith("train/loss_")), rel=1e-5)


def test_validation_epoch_logs_map_and_per_class_scores(built):
    datamodule, task = built
    logged = {}
    task.log_dict = lambda values, **kw: logged.update(values)
    task.eval()
    with torch.no_grad():
        for index, batch in enumerate(datamodule.val_dataloader()):
            task.validation_step(batch, index)
    task.on_validation_epoch_end()
    for key in ("val/map", "val/map_50", "val/precision", "val/recall", "val/f1", "val/ap/mask_weared_incorrect",
                "val/ap50/with_mask", "val/recall/without_mask"):
        assert key in logged, sorted(logged)
    assert 0.0 <= logged["val/map_50"] <= 1.0
    assert task.val_metrics.prf.tp.sum() == 0 and task.val_metrics.prf.fn.sum() == 0  # reset after the epoch
    grid = task.render_examples("val")
    assert grid.dtype == torch.uint8 and grid.shape[0] == 3 and grid.shape[1] >= 96
    # The drawn examples come from the whole epoch, across the classes of the split's boxes.
    shown = {c for target in task.examples["val"]["out_target"] for c in target["labels"].tolist()}
    present = {c for batch in datamodule.val_dataloader() for labels in batch["labels"] for c in labels.tolist()}
    assert shown == present


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore::UserWarning", "ignore::FutureWarning")
def test_onnx_export_matches_pytorch_on_a_real_sample(built, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    datamodule, task = built
    spec = task.export_spec()
    assert spec.metadata["pad_value"] == 114 and spec.metadata["class_names"][0] == "with_mask"
    path = tmp_path / "det.onnx"
    torch.onnx.export(spec.module, tuple(spec.inputs.values()), path, input_names=list(spec.inputs),
                      output_names=spec.output_names, dynamic_axes=spec.dynamic_axes() or None, dynamo=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    image = datamodule.datasets["val"][0]["image"][None]
    boxes, scores, labels = session.run(None, {"image": image.numpy()})
    with torch.no_grad():
        ref_boxes, ref_scores, ref_labels = spec.module(image)
    assert (ref_scores > 0).sum() > 0
    np.testing.assert_allclose(scores, ref_scores.numpy(), atol=1e-4)
    np.testing.assert_allclose(boxes, ref_boxes.numpy(), atol=1e-2)
    np.testing.assert_array_equal(labels, ref_labels.numpy())


def test_prediction_writes_csv_in_original_pixels_and_drawings(built, tmp_path):
    datamodule, task = built
    source = tmp_path / "input"
    (source / "sub").mkdir(parents=True)
    first = datamodule.splits["test"][0].image_path
    shutil.copy(first, source / "A.PNG")
    wide = cv2.resize(cv2.imread(str(first)), (300, 120))
    cv2.imwrite(str(source / "sub" / "wide.jpg"), wide)
    (source / "README.txt").write_text("not an image")
    out = predict_files(task, datamodule, source, tmp_path / "out", score_threshold=0.0)
    with out.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["path", "label", "score", "xmin", "ymin", "xmax", "ymax"]
    assert {r["path"] for r in rows} == {str(source / "A.PNG"), str(source / "sub" / "wide.jpg")}
    wide_rows = [r for r in rows if r["path"].endswith("wide.jpg")]
    assert max(float(r["xmax"]) for r in wide_rows) > 96 and all(float(r["ymax"]) <= 120 for r in wide_rows)
    assert {r["label"] for r in rows} <= set(datamodule.class_names)
    assert (tmp_path / "out" / "images" / "A.png").is_file() and (tmp_path / "out" / "images" / "sub" / "wide.png").is_file()
    single = predict_files(task, datamodule, source / "A.PNG", tmp_path / "one", draw=False, batch_size=2)
    assert single.read_text().startswith("path,label,score") and not (tmp_path / "one" / "images").exists()


def test_prediction_without_any_box_says_so(built, tmp_path, caplog):
    datamodule, task = built
    image = datamodule.splits["test"][0].image_path
    with caplog.at_level("WARNING"):
        out = predict_files(task, datamodule, image, tmp_path / "none", score_threshold=1.0, draw=False)  # [0, 1]: 1.01 is refused
    assert out.read_text().strip() == "path,label,score,xmin,ymin,xmax,ymax"
    assert "no box scored above the score threshold in any of the 1 images" in caplog.text


def test_prediction_input_errors(built, tmp_path):
    datamodule, task = built
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="no images"):
        predict_files(task, datamodule, tmp_path / "empty", tmp_path / "out")
    with pytest.raises(UserError, match="not an image"):
        predict_files(task, datamodule, tmp_path / "notes.txt", tmp_path / "out")
    with pytest.raises(UserError, match="input"):
        predict_files(task, datamodule, tmp_path / "missing", tmp_path / "out")
    with pytest.raises(UserError, match="options.threshold: not an option of DetectionTask"):
        predict_files(task, datamodule, tmp_path / "empty", tmp_path / "out", threshold=0.3)


def test_checkpoint_options_rebuild_the_same_detector(built, tmp_path):
    _, task = built
    path = tmp_path / "task.ckpt"
    torch.save({"state_dict": task.state_dict(), "hyper_parameters": dict(task.hparams)}, path)
    hparams = torch.load(path, weights_only=True)["hyper_parameters"]
    rebuilt = DetectionTask(**hparams)
    assert (rebuilt.score_threshold, rebuilt.class_weights) == (task.score_threshold, task.class_weights)
    rebuilt.load_state_dict(task.state_dict())
