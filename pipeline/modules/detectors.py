"""Small one-stage detectors (torchvision FCOS and RetinaNet on a timm backbone + FPN) and their export wrapper.

Conventions: labels are 0-based class indices (both detectors score each class with its own
sigmoid, so no background slot is needed); inputs are float RGB in [0, 1], already letterboxed to
``image_size``, which is also the internal transform's min/max size so it never rescales; ImageNet
normalisation happens inside the model.

Class weights: a location assigned to an object of class c counts ``class_weights[c]`` times in the
sigmoid focal classification loss (background locations count once); all ones gives torchvision's
loss exactly. Use it to lift the rare class (e.g. ``mask_weared_incorrect``).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import timm
import torch
from torch import Tensor, nn
from torchvision.models import resnet50
from torchvision.models.detection import FCOS, FCOS_ResNet50_FPN_Weights, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetClassificationHead, RetinaNetHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d, sigmoid_focal_loss
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from pipeline.modules.init_weights import load_matching
from pipeline.utils.errors import UserError

log = logging.getLogger(__name__)

# The backbone maps the FPN reads: strides 8-32 (P3-P5), or 4-32 with ``min_stride=4`` (P2: a face under
# 16 px covers one or two stride-8 locations, about six stride-4 ones); P6/P7 (64, 128) are added on top.
MIN_STRIDES = (4, 8)


def fpn_strides(min_stride: int) -> tuple[int, ...]:
    """Every level's stride, the backbone's (``min_stride`` to 32) then P6 and P7."""
    return tuple(2**i for i in range(min_stride.bit_length() - 1, 8))


class TimmFpnBackbone(nn.Module):
    """A timm feature extractor (strides ``min_stride`` to 32) with an FPN and P6/P7, as torchvision detectors expect."""

    def __init__(
        self,
        name: str,
        out_channels: int = 64,
        pretrained: bool = False,
        weights: str | Path | None = None,
        min_stride: int = 8,
    ):
        super().__init__()
        if out_channels < 64 or out_channels % 32:
            # the heads' GroupNorm(32) needs 2+ channels per group to work on 1x1 P7 maps of small images
            raise UserError(f"model.fpn_channels: {out_channels} must be a multiple of 32 and at least 64")
        if min_stride not in MIN_STRIDES:
            raise UserError(f"model.min_stride: {min_stride} is not one of {MIN_STRIDES}")
        overlay = {"file": str(weights)} if weights else None
        try:
            self.body = timm.create_model(
                name,
                features_only=True,
                pretrained=pretrained or weights is not None,
                pretrained_cfg_overlay=overlay,
            )
        except (RuntimeError, OSError) as exc:
            raise UserError(f"model.backbone '{name}': cannot create or load weights ({exc})") from None
        reductions = self.body.feature_info.reduction()
        strides = fpn_strides(min_stride)[:-2]
        if not set(strides) <= set(reductions):
            raise UserError(
                f"model.backbone '{name}': needs feature maps at strides {strides}, has {reductions}"
            )
        self.levels = [reductions.index(stride) for stride in strides]
        channels = [self.body.feature_info.channels()[i] for i in self.levels]
        self.fpn = FeaturePyramidNetwork(
            channels, out_channels, extra_blocks=LastLevelP6P7(out_channels, out_channels)
        )
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.body(x)
        return self.fpn(OrderedDict((str(i), features[level]) for i, level in enumerate(self.levels)))


def _weighted_focal_sum(logits: Tensor, anchor_classes: Tensor, class_weights: Tensor) -> Tensor:
    """Sigmoid focal loss summed over [A, C] logits; anchors of class c (>= 0) weigh class_weights[c]."""
    foreground = anchor_classes >= 0
    targets = torch.zeros_like(logits)
    targets[foreground, anchor_classes[foreground]] = 1.0
    per_anchor = sigmoid_focal_loss(logits, targets, reduction="none").sum(dim=-1)
    weights = torch.ones_like(per_anchor)
    weights[foreground] = class_weights[anchor_classes[foreground]]
    return (per_anchor * weights).sum()


def _anchor_classes(labels: Tensor, matched_idxs: Tensor) -> Tensor:
    """Class of the object each anchor is matched to, -1 for background."""
    if labels.numel() == 0:
        return torch.full_like(matched_idxs, -1)
    return torch.where(matched_idxs >= 0, labels[matched_idxs.clip(min=0)], -1)


class SoftplusConv2d(nn.Conv2d):
    """A convolution followed by softplus: FCOS box distances that are positive and never stop learning.

    torchvision's FCOS takes ``relu`` of its distance outputs; trained from scratch, a regression branch
    pushed below zero early gets no gradient again (box loss stuck at 1.0, no box ever found: seen on the
    Kaggle face-mask set in 2 of 3 runs). ``relu(softplus(x)) = softplus(x)``, and the state dict keys
    stay those of torchvision's head.
    """

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.softplus(super().forward(x))


class WeightedFCOSHead(FCOSHead):
    """FCOS head whose focal classification loss weighs each foreground location by its class weight,
    with softplus box distances (``SoftplusConv2d``)."""

    def __init__(
        self, in_channels: int, num_anchors: int, num_classes: int, num_convs: int, class_weights: Tensor
    ):
        super().__init__(in_channels, num_anchors, num_classes, num_convs)
        self.register_buffer("class_weights", class_weights, persistent=False)
        regression = SoftplusConv2d(in_channels, num_anchors * 4, kernel_size=3, stride=1, padding=1)
        nn.init.normal_(regression.weight, std=0.01)  # torchvision's initialisation
        nn.init.zeros_(regression.bias)
        self.regression_head.bbox_reg = regression

    def compute_loss(self, targets, head_outputs, anchors, matched_idxs) -> dict[str, Tensor]:
        losses = super().compute_loss(targets, head_outputs, anchors, matched_idxs)
        classes = torch.stack(
            [_anchor_classes(t["labels"], m) for t, m in zip(targets, matched_idxs, strict=True)]
        )
        logits = head_outputs["cls_logits"]
        loss = _weighted_focal_sum(logits.flatten(0, 1), classes.flatten(), self.class_weights)
        losses["classification"] = loss / max(1, int((classes >= 0).sum()))
        return losses


class WeightedRetinaNetClassificationHead(RetinaNetClassificationHead):
    """RetinaNet classification head whose focal loss weighs each foreground anchor by its class weight."""

    def __init__(
        self, in_channels: int, num_anchors: int, num_classes: int, class_weights: Tensor, norm_layer=None
    ):
        super().__init__(in_channels, num_anchors, num_classes, norm_layer=norm_layer)
        self.register_buffer("class_weights", class_weights, persistent=False)

    def compute_loss(self, targets, head_outputs, matched_idxs) -> Tensor:
        losses = []
        for target, logits, matched in zip(targets, head_outputs["cls_logits"], matched_idxs, strict=True):
            valid = matched != self.BETWEEN_THRESHOLDS
            classes = _anchor_classes(target["labels"], matched)
            loss = _weighted_focal_sum(logits[valid], classes[valid], self.class_weights)
            losses.append(loss / max(1, int((matched >= 0).sum())))
        return torch.stack(losses).sum() / len(targets)


def _class_weights(class_weights: Sequence[float] | None, num_classes: int) -> Tensor:
    if class_weights is None:
        return torch.ones(num_classes)
    if len(class_weights) != num_classes:
        raise UserError(
            f"task.class_weights: {list(class_weights)} needs one weight per class ({num_classes})"
        )
    return torch.as_tensor(class_weights, dtype=torch.float32)


def _load_detector_weights(model: nn.Module, path: str | Path) -> None:
    """Load a detector state dict (or a checkpoint's ``state_dict`` with a ``model.`` prefix) from a local file."""
    try:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise UserError(f"model.weights: cannot read '{path}' ({exc})") from None
    state = state.get("state_dict", state)
    state = {key.removeprefix("model."): value for key, value in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        reason = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise UserError(f"model.weights: '{path}' does not fit this detector ({reason})") from None


def _finish(model: FCOS | RetinaNet, image_size: int | Sequence[int], detector_weights: str | Path | None) -> None:
    """Give the detector this framework's no-resize transform, and a whole trained detector's weights when given."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    mean, std = model.transform.image_mean, model.transform.image_std
    model.transform = NoResizeTransform(min(height, width), max(height, width), mean, std)
    if detector_weights is not None:
        _load_detector_weights(model, detector_weights)


def _box_settings(min_score: float, nms_threshold: float, detections_per_img: int) -> dict[str, float]:
    return {"score_thresh": min_score, "nms_thresh": nms_threshold, "detections_per_img": detections_per_img}


class TimmFCOS(FCOS):
    """torchvision's FCOS on any timm backbone with an FPN (configs/model/fcos.yaml), for ``image_size`` inputs.

    ``pretrained`` fetches the backbone's ImageNet weights through timm; ``weights`` loads them from a local file
    instead (e.g. torchvision's ``resnet18-f37072fd.pth``); ``detector_weights`` loads a whole trained detector.
    ``min_stride`` 4 adds a stride-4 level (P2) for tiny objects (about 45% more time per training step at 384 px).
    ``min_score`` is the detector's own score cut, ``nms_threshold`` its NMS IoU. One anchor per location, of
    its level's stride (the scale ranges follow from it).
    """

    def __init__(self, *, num_classes: int, image_size: int | Sequence[int] = 256, class_weights: Sequence[float] | None = None,
                 backbone: str = "resnet18", pretrained: bool = False, weights: str | Path | None = None,
                 fpn_channels: int = 64, head_convs: int = 2, min_stride: int = 8, min_score: float = 0.05,
                 nms_threshold: float = 0.5, detections_per_img: int = 100, detector_weights: str | Path | None = None) -> None:
        body = TimmFpnBackbone(backbone, fpn_channels, pretrained, weights, min_stride)
        sizes = tuple((stride,) for stride in fpn_strides(min_stride))
        head = WeightedFCOSHead(fpn_channels, 1, num_classes, head_convs, _class_weights(class_weights, num_classes))
        super().__init__(body, num_classes, anchor_generator=AnchorGenerator(sizes, ((1.0,),) * len(sizes)), head=head,
                         **_box_settings(min_score, nms_threshold, detections_per_img))
        _finish(self, image_size, detector_weights)


class TimmRetinaNet(RetinaNet):
    """torchvision's RetinaNet (its head has 4 convs) on the same backbone and FPN as ``TimmFCOS``, with its arguments
    (configs/model/retinanet.yaml): three anchor scales of twice the stride (torchvision's defaults halved: faces in
    256-640 px images are small)."""

    def __init__(self, *, num_classes: int, image_size: int | Sequence[int] = 256, class_weights: Sequence[float] | None = None,
                 backbone: str = "resnet18", pretrained: bool = False, weights: str | Path | None = None,
                 fpn_channels: int = 64, head_convs: int = 4, min_stride: int = 8, min_score: float = 0.05,
                 nms_threshold: float = 0.5, detections_per_img: int = 100, detector_weights: str | Path | None = None) -> None:
        if head_convs != 4:
            raise UserError(f"model.head_convs: RetinaNet's head has 4 convs, not {head_convs}")
        body = TimmFpnBackbone(backbone, fpn_channels, pretrained, weights, min_stride)
        sizes = tuple((2 * s, int(2 * s * 2 ** (1 / 3)), int(2 * s * 2 ** (2 / 3))) for s in fpn_strides(min_stride))
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
        num_anchors = anchors.num_anchors_per_location()[0]
        norm = partial(nn.GroupNorm, 16)
        head = RetinaNetHead(fpn_channels, num_anchors, num_classes, norm_layer=norm)
        head.classification_head = WeightedRetinaNetClassificationHead(
            fpn_channels, num_anchors, num_classes, _class_weights(class_weights, num_classes), norm_layer=norm)
        super().__init__(body, num_classes, anchor_generator=anchors, head=head,
                         **_box_settings(min_score, nms_threshold, detections_per_img))
        _finish(self, image_size, detector_weights)


class CocoFCOS(FCOS):
    """torchvision's FCOS ResNet-50 FPN as ``fcos_resnet50_fpn`` builds it for its COCO weights (frozen BatchNorm,
    the stem and first stage frozen; levels P3-P7, 256 channels, 4 head convs), with ``num_classes`` outputs and the
    class-weighted head (configs/model/fcos_coco.yaml).

    ``pretrained`` downloads torchvision's COCO weights (needs internet) and loads every tensor but the
    91-class output layer; offline, pass torchvision's file to ``model.init_from`` instead (the same tensors load).
    """

    def __init__(self, *, num_classes: int, image_size: int | Sequence[int] = 256, class_weights: Sequence[float] | None = None,
                 pretrained: bool = False, min_score: float = 0.05, nms_threshold: float = 0.5, detections_per_img: int = 100,
                 detector_weights: str | Path | None = None) -> None:
        body = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), 3, returned_layers=[2, 3, 4],
                                     extra_blocks=LastLevelP6P7(256, 256))
        head = WeightedFCOSHead(body.out_channels, 1, num_classes, 4, _class_weights(class_weights, num_classes))
        super().__init__(body, num_classes, head=head, **_box_settings(min_score, nms_threshold, detections_per_img))
        if pretrained:
            source = "torchvision FCOS_ResNet50_FPN_Weights.COCO_V1"
            try:
                state = FCOS_ResNet50_FPN_Weights.COCO_V1.get_state_dict(progress=True, check_hash=True)
            except (OSError, RuntimeError) as exc:  # no internet: URLError is an OSError
                raise UserError(f"model.pretrained: cannot fetch {source} ({exc}); offline, download "
                                f"{FCOS_ResNet50_FPN_Weights.COCO_V1.url} elsewhere and pass it as model.init_from") from None
            log.info("%s", load_matching(self, state, source, "torchvision COCO weights", "backbone.body.").table())
        _finish(self, image_size, detector_weights)


class NoResizeTransform(GeneralizedRCNNTransform):
    """torchvision's detector transform without its resize: inputs arrive letterboxed to the model size
    (or as training crops, which must keep their pixel scale), so it only normalises and batches."""

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None) -> tuple[Tensor, dict | None]:
        return image, target


class DetectorForExport(nn.Module):
    """Single-image detector with fixed-shape outputs for ONNX: boxes [N, 4], scores [N], labels [N].

    Input: float [1, 3, H, W] letterboxed image in [0, 1]. Rows past the real detections are padding
    with score 0 and label -1; N is ``max_detections`` (the model's ``detections_per_img`` by default).
    """

    def __init__(self, model: FCOS | RetinaNet, max_detections: int | None = None):
        super().__init__()
        self.model = model.eval()
        self.max_detections = max_detections or model.detections_per_img

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        detections = self.model([images[0]])[0]
        n = self.max_detections
        boxes = torch.cat([detections["boxes"], images.new_zeros(n, 4)])[:n]
        scores = torch.cat([detections["scores"], images.new_zeros(n)])[:n]
        labels = torch.cat([detections["labels"], torch.full((n,), -1, dtype=torch.int64)])[:n]
        return boxes, scores, labels
