"""Detectors: train/eval forward, class-weighted focal loss, weight loading, ONNX export parity."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetClassificationHead

from pipeline.delivery.answers import Detections
from pipeline.modules.detectors import DetectorForExport, TimmFCOS, TimmRetinaNet
from pipeline.utils.errors import UserError

SIZE = 64
BUILD = {"fcos": TimmFCOS, "retinanet": TimmRetinaNet}
SMALL = {"backbone": "mobilenetv3_small_050", "image_size": SIZE, "fpn_channels": 64}


def _batch():
    images = [torch.rand(3, SIZE, SIZE) for _ in range(2)]
    targets = [
        {
            "boxes": torch.tensor([[5.0, 10.0, 30.0, 40.0], [35.0, 5.0, 55.0, 30.0]]),
            "labels": torch.tensor([0, 2]),
        },
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},
    ]
    return images, targets


@pytest.fixture(autouse=True)
def _seed_and_one_thread():
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ["fcos", "retinanet"])
def test_forward_train_gives_finite_losses_with_gradients(name):
    model = BUILD[name](num_classes=3, **SMALL).train()
    losses = model(*_batch())
    assert "classification" in losses and "bbox_regression" in losses
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.backbone.body.conv_stem.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["fcos", "retinanet"])
def test_forward_eval_returns_boxes_in_input_pixels(name):
    model = BUILD[name](num_classes=3, min_score=0.0, detections_per_img=20, **SMALL).eval()
    images, _ = _batch()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2
    for det in out:
        assert (
            det["boxes"].shape[1] == 4 and len(det["boxes"]) == len(det["scores"]) == len(det["labels"]) <= 20
        )
        assert det["boxes"].min() >= 0 and det["boxes"].max() <= SIZE
        assert det["labels"].min() >= 0 and det["labels"].max() < 3


def test_internal_transform_does_not_rescale():
    model = TimmFCOS(num_classes=3, **SMALL).eval()
    images, _ = model.transform([torch.rand(3, SIZE, SIZE)])
    assert images.image_sizes == [(SIZE, SIZE)]


def test_training_crops_keep_their_pixel_scale():
    """data.crop: a crop smaller than the model size is not scaled up to it, and its boxes stay put."""
    model = TimmFCOS(num_classes=3, **{**SMALL, "image_size": 2 * SIZE}).train()
    boxes = torch.tensor([[5.0, 10.0, 30.0, 40.0]])
    images, targets = model.transform([torch.rand(3, SIZE, SIZE)], [{"boxes": boxes.clone(), "labels": torch.tensor([1])}])
    assert images.image_sizes == [(SIZE, SIZE)] and tuple(images.tensors.shape[-2:]) == (SIZE, SIZE)
    torch.testing.assert_close(targets[0]["boxes"], boxes)


@pytest.mark.parametrize("name", ["fcos", "retinanet"])
def test_class_weights_scale_the_classification_loss_of_that_class(name):
    images, targets = _batch()
    rare_only = [{"boxes": targets[0]["boxes"][1:], "labels": targets[0]["labels"][1:]}, targets[1]]

    def classification_loss(weights):
        torch.manual_seed(0)
        model = BUILD[name](num_classes=3, class_weights=weights, **SMALL).train()
        with torch.no_grad():
            return float(model(images, rare_only)["classification"])

    unit, heavy, other = (
        classification_loss(None),
        classification_loss([1, 1, 5]),
        classification_loss([5, 5, 1]),
    )
    assert heavy > 2 * unit
    assert other == pytest.approx(unit, rel=1e-5)


@pytest.mark.parametrize(
    ("name", "torchvision_head"), [("fcos", FCOSHead), ("retinanet", RetinaNetClassificationHead)]
)
def test_unit_class_weights_reproduce_torchvision_loss(name, torchvision_head):
    model = BUILD[name](num_classes=3, **SMALL).train()
    head = model.head if name == "fcos" else model.head.classification_head
    calls = []
    weighted_loss = head.compute_loss

    def spy(*args):
        calls.append(args)
        return weighted_loss(*args)

    head.compute_loss = spy
    ours = model(*_batch())["classification"]
    reference = torchvision_head.compute_loss(head, *calls[0])
    reference = reference["classification"] if name == "fcos" else reference
    assert float(ours) == pytest.approx(float(reference), rel=1e-5)


def test_fcos_box_distances_stay_positive_and_learning_below_zero():
    """torchvision's relu would give 0 and no gradient for these pre-activations (a dead branch)."""
    model = TimmFCOS(num_classes=3, **SMALL).train()
    head = model.head.regression_head
    torch.nn.init.constant_(head.bbox_reg.bias, -6.0)
    features = [torch.randn(2, model.head.regression_head.bbox_reg.in_channels, 8, 8)]
    distances, _ = head(features)
    assert distances.min() > 0
    pre = torch.nn.functional.conv2d(head.conv(features[0]), head.bbox_reg.weight, head.bbox_reg.bias, padding=1)
    expected = torch.nn.functional.softplus(pre).view(2, 1, 4, 8, 8).permute(0, 3, 4, 1, 2).reshape(2, -1, 4)
    assert torch.allclose(distances, expected, atol=1e-6)
    distances.sum().backward()
    assert head.bbox_reg.bias.grad.abs().min() > 0


def test_bad_arguments_raise_user_errors():
    with pytest.raises(UserError, match="model.head_convs"):
        TimmRetinaNet(num_classes=3, head_convs=2)
    with pytest.raises(UserError, match="class_weights"):
        TimmFCOS(num_classes=3, class_weights=[1, 2])
    with pytest.raises(UserError, match="model.backbone 'no_such_net'"):
        TimmFCOS(num_classes=3, backbone="no_such_net")
    with pytest.raises(UserError, match="fpn_channels"):
        TimmFCOS(num_classes=3, fpn_channels=48)


@pytest.mark.parametrize("name", ["fcos", "retinanet"])
def test_min_stride_4_adds_a_stride_4_level(name):
    """P2: the head sees a 16x16 map for a 64 px image (4x the locations of the stride-8 map), and a
    tiny box trains without error."""
    model = BUILD[name](num_classes=3, min_stride=4, **SMALL).train()
    features = model.backbone(torch.rand(1, 3, SIZE, SIZE))
    assert [f.shape[-1] for f in features.values()] == [16, 8, 4, 2, 1, 1]
    coarse = BUILD[name](num_classes=3, **SMALL).backbone(torch.rand(1, 3, SIZE, SIZE))
    assert [f.shape[-1] for f in coarse.values()] == [8, 4, 2, 1, 1]
    tiny = [{"boxes": torch.tensor([[20.0, 20.0, 29.0, 30.0]]), "labels": torch.tensor([1])}]
    losses = model([torch.rand(3, SIZE, SIZE)], tiny)
    assert all(torch.isfinite(v) for v in losses.values())


def test_stride_4_gives_a_tiny_face_more_positive_locations():
    """FCOS trains a location on a box it lies inside (near its centre, at the level of its size): a
    9x10 px box holds one stride-8 location and at least four stride-4 ones."""
    tiny = [{"boxes": torch.tensor([[20.0, 20.0, 29.0, 30.0]]), "labels": torch.tensor([1])}]
    positives = {}
    for min_stride in (8, 4):
        model = TimmFCOS(num_classes=3, min_stride=min_stride, **SMALL).train()
        head_loss = model.head.compute_loss

        def count(targets, head_outputs, anchors, matched_idxs, stride=min_stride, head_loss=head_loss):
            positives[stride] = sum(int((m >= 0).sum()) for m in matched_idxs)
            return head_loss(targets, head_outputs, anchors, matched_idxs)

        model.head.compute_loss = count
        model([torch.rand(3, SIZE, SIZE)], tiny)
    assert positives[8] <= 2 and positives[4] >= 4, positives
    with pytest.raises(UserError, match="model.min_stride"):
        TimmFCOS(num_classes=3, min_stride=2, **SMALL)


def test_weights_files_load(tmp_path):
    model = TimmFCOS(num_classes=3, image_size=SIZE, backbone="resnet18")
    torch.save(
        {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, tmp_path / "det.ckpt"
    )
    again = TimmFCOS(num_classes=3, image_size=SIZE, backbone="resnet18", detector_weights=tmp_path / "det.ckpt"
    )
    assert all(
        torch.equal(a, b)
        for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True)
    )
    # a torchvision-style ImageNet classifier file (conv1, layer1..4, fc) loads into the backbone
    classifier = dict(model.backbone.body.state_dict())
    classifier.update({"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)})
    torch.save(classifier, tmp_path / "resnet18.pth")
    with_backbone = TimmFCOS(num_classes=3,
        image_size=SIZE,
        backbone="resnet18",
        weights=tmp_path / "resnet18.pth",
    )
    assert torch.equal(with_backbone.backbone.body.conv1.weight, model.backbone.body.conv1.weight)
    with pytest.raises(UserError, match="does not fit"):
        TimmRetinaNet(num_classes=3, image_size=SIZE, detector_weights=tmp_path / "det.ckpt")


def test_export_wrapper_pads_to_fixed_shape():
    model = TimmFCOS(num_classes=3, min_score=0.0, detections_per_img=10, **SMALL)
    wrapper = DetectorForExport(model, max_detections=15)
    with torch.no_grad():
        boxes, scores, labels = wrapper(torch.rand(1, 3, SIZE, SIZE))
    assert boxes.shape == (15, 4) and scores.shape == (15,) and labels.shape == (15,)
    assert (labels[10:] == -1).all() and (scores[10:] == 0).all() and (labels[:10] >= 0).all()


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning", "ignore:To copy construct:UserWarning")
@pytest.mark.parametrize("name", ["fcos", "retinanet"])
def test_onnx_export_matches_pytorch(name, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = BUILD[name](num_classes=3, min_score=0.0, detections_per_img=50, **SMALL)
    wrapper = DetectorForExport(model).eval()
    image = torch.rand(1, 3, SIZE, SIZE)
    path = tmp_path / "det.onnx"
    torch.onnx.export(
        wrapper,
        (image,),
        path,
        opset_version=17,
        dynamo=False,
        input_names=["images"],
        output_names=["boxes", "scores", "labels"],
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    boxes, scores, labels = session.run(None, {"images": image.numpy()})
    with torch.no_grad():
        ref_boxes, ref_scores, ref_labels = wrapper(image)
    assert boxes.shape == (50, 4)
    names = ("boxes", "scores", "labels")
    ort_out = dict(zip(names, (boxes, scores, labels)))
    torch_out = dict(zip(names, (t.numpy() for t in (ref_boxes, ref_scores, ref_labels))))
    # Untrained scores are tied within ~1e-6, below the backends' float noise: detections are paired in
    # any order (export's own parity check), and those tied with the last kept score are not compared.
    for got, ref in ((ort_out, torch_out), (torch_out, ort_out)):
        worst = Detections.differences(got, ref)
        assert worst["labels"] == 0.0 and worst["scores"] <= 1e-4 and worst["boxes"] <= 1e-2, worst
        assert (got["scores"] > ref["scores"].min() + 1e-4).sum() >= len(got["scores"]) // 2, \
            "most detections must be compared"
