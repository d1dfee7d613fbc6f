"""Pascal VOC detection data (face-mask detection): seeded stratified split by image, letterbox, box-aware augmentation."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.base import BaseDataModule, to_plain
from pipeline.data.cache import CachedImages
from pipeline.data.detection_transforms import (
    PAD_VALUE,
    DetectionTransform,
    build_train_augment,
    image_to_tensor,
    letterbox,
)
from pipeline.data.formats.voc import (
    VocImage,
    class_counts_per_image,
    read_voc_dataset,
    split_voc,
)
from pipeline.data.io import load_image
from pipeline.data.samplers.weighted import WeightedSampler, repeat_factor_weights
from pipeline.data.synthetic.cache import ensure_generated
from pipeline.data.synthetic.voc_facemask import FACEMASK_CLASSES, generate_voc_facemask
from pipeline.utils.contracts import DataInfo
from pipeline.utils.errors import UserError, require_path

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPLITS = ("train", "val", "test")


def collate_detection(items: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack the (same-size, letterboxed) images; keep boxes, labels and letterbox metadata as per-image lists."""
    batch: dict[str, Any] = {"image": torch.stack([item["image"] for item in items])}
    for key in ("boxes", "labels", "scale", "pad", "orig_size", "path"):
        batch[key] = [item[key] for item in items]
    return batch


class VocDetectionDataset(Dataset):
    """VOC images through a DetectionTransform; items: ``image``, ``boxes`` (letterboxed xyxy), ``labels``,
    ``scale``/``pad`` (to map boxes back), ``orig_size`` (h, w) and ``path``."""

    collate_fn = staticmethod(collate_detection)

    def __init__(self, images: Sequence[VocImage], transform: DetectionTransform, decoded: CachedImages | None = None):
        self.images = list(images)
        self.transform = transform
        self.decoded = decoded  # the images decoded once at their own size (data.cache), or None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        record = self.images[index]
        image = self.decoded[index] if self.decoded is not None else load_image(record.image_path)
        boxes = np.array([obj.box for obj in record.objects], dtype=np.float32).reshape(-1, 4)
        labels = np.array([obj.label for obj in record.objects], dtype=np.int64)
        item = self.transform(image, boxes, labels)
        item["orig_size"] = tuple(image.shape[:2])
        item["path"] = str(record.image_path)
        return item


class VocDetectionDataModule(BaseDataModule):
    """Face-mask VOC data: ``root/images`` + ``root/annotations``, or the synthetic set generated on first use.

    The split (``data.split_file``, VOC's ``ImageSets/Main`` lists, or by image, stratified by per-class
    object counts, seeded) is written to ``split_out`` (every run records its split) and reused from there
    on resume; ``split_file`` reuses the split of another run or the user's own.
    """

    SAMPLERS = ("random", "repeat_factor")

    def __init__(
        self,
        root: str | None = None,
        cache_dir: str = "data/synthetic",
        class_names: Sequence[str] = FACEMASK_CLASSES,
        images_dir: str = "images",
        annotations_dir: str = "annotations",
        image_size: int = 256,
        augment: Sequence | None = (),
        min_visibility: float = 0.3,
        crop: int | None = None,
        synthetic: dict[str, Any] | None = None,
        skip_bad_files: bool = False,
        unknown_class: str = "error",
        sampler: str = "random",
        repeat_threshold: float = 1.0,
        **loader_kwargs: Any,
    ) -> None:
        super().__init__(sampler=sampler, **loader_kwargs)
        self.repeat_threshold = float(repeat_threshold)
        self.root = root
        self.cache_dir = Path(cache_dir)
        self.class_names = list(class_names)
        self.images_dir = images_dir
        self.annotations_dir = annotations_dir
        self.image_size = int(image_size)
        self.augment = to_plain(augment) or []
        self.min_visibility = float(min_visibility)
        self.crop = int(crop) if crop and int(crop) < self.image_size else None  # a crop as large as the letterbox is the whole image
        self.synthetic = {"num_images": 400, "image_size": 256, "seed": 0, **dict(synthetic or {})}
        self.skip_bad_files = skip_bad_files
        self.unknown_class = unknown_class
        self.splits: dict[str, list[VocImage]] = {}

    # --- where the data is --------------------------------------------------------------------
    @property
    def data_root(self) -> Path:
        """The user's ``data.root``, or the synthetic cache folder named after the generator's parameters."""
        if self.root is not None:
            return require_path(self.root, "data.root", "dataset folder")
        s = self.synthetic
        return self.cache_dir / f"voc_facemask_n{s['num_images']}_px{s['image_size']}_seed{s['seed']}"

    def prepare_data(self) -> None:
        if self.root is not None:
            return
        s = self.synthetic
        ensure_generated(self.data_root, lambda folder: generate_voc_facemask(
            folder, s["num_images"], (s["image_size"], s["image_size"]), s["seed"]))

    # --- splits and datasets ------------------------------------------------------------------
    def make_splits(self) -> dict[str, list[VocImage]]:
        """Read the dataset and split it (see ``split_voc``)."""
        images = read_voc_dataset(
            self.data_root, self.class_names, self.images_dir, self.annotations_dir,
            self.skip_bad_files, self.unknown_class,
        )
        if not images:
            raise UserError(f"data.root: no images found in '{self.data_root / self.images_dir}'")
        return split_voc(self.splitter, self.data_root, images, len(self.class_names))

    def build_datasets(self) -> dict[str, Dataset]:
        self.splits = self.make_splits()
        augment = (build_train_augment(self.augment, self.min_visibility, self.crop)
                   if self.augment or self.crop else None)
        eval_transform = DetectionTransform(self.image_size)
        # Decoded at their own size: the letterbox moves the boxes too, so it stays in the transform.
        return {
            name: VocDetectionDataset(self.splits[name], DetectionTransform(self.image_size, augment) if name == "train" else eval_transform,
                                      self.decoded([(image.image_path, None) for image in self.splits[name]], None, "native"))
            for name in SPLITS
        }

    def train_sampler(self, dataset: Dataset):
        """``data.sampler=repeat_factor``: images with rare classes drawn more often (``repeat_factor_weights``)."""
        if self.sampler == "random":
            return super().train_sampler(dataset)
        rank, world_size = self._distributed()
        classes = [[obj.label for obj in image.objects] for image in dataset.images]
        weights = repeat_factor_weights(classes, len(self.class_names), self.repeat_threshold)
        return WeightedSampler(weights, self.seed, rank=rank, world_size=world_size)

    # --- description and the one eval preprocessing ----------------------------------------------
    @property
    def info(self) -> DataInfo:
        if not self.splits:
            self.setup()
        counts = class_counts_per_image(self.splits["train"], len(self.class_names)).sum(axis=0)
        # mean and std are applied inside the detector (inputs are RGB in [0, 1]); recorded for export and serving.
        return DataInfo("detection", list(self.class_names), (3, self.image_size, self.image_size), list(IMAGENET_MEAN),
                        list(IMAGENET_STD), [int(c) for c in counts], pad_value=PAD_VALUE, resize="letterbox")

    def letterbox_image(self, image: np.ndarray) -> tuple[torch.Tensor, float, tuple[int, int]]:
        """RGB uint8 image -> letterboxed CHW tensor in [0, 1], with the scale and (pad_x, pad_y) to map boxes back."""
        boxed, scale, pad = letterbox(image, self.image_size)
        return image_to_tensor(boxed), scale, pad

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return self.letterbox_image(image)[0]

    def predict_item(self, image: np.ndarray) -> dict[str, Any]:
        """The letterboxed image with the ``scale``, ``pad`` and ``orig_size`` that map its boxes back."""
        tensor, scale, pad = self.letterbox_image(image)
        return {"image": tensor, "scale": scale, "pad": pad, "orig_size": image.shape[:2]}
