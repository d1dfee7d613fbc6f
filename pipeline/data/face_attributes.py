"""Face-attribute data: boostcamp mask / gender / age (split by person) and VOC face-mask crops (split by image)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pipeline.data.base import to_plain
from pipeline.data.classification import ImageClassificationDataModule, Sample, class_counts
from pipeline.data.formats.boostcamp import (
    AGE_NAMES,
    CLASS_NAMES,
    GENDER_NAMES,
    MASK_NAMES,
    read_boostcamp_train,
)
from pipeline.data.formats.voc import VocImage, read_voc_dataset, split_voc
from pipeline.data.synthetic.boostcamp import generate_boostcamp
from pipeline.data.synthetic.voc_facemask import FACEMASK_CLASSES, generate_voc_facemask
from pipeline.utils.errors import UserError

HEADS = {"mask": list(MASK_NAMES), "gender": list(GENDER_NAMES), "age": list(AGE_NAMES)}
TARGETS = {"class": list(CLASS_NAMES), **HEADS}


class BoostcampDataModule(ImageClassificationDataModule):
    """Boostcamp train/ split by person, stratified on each person's gender x age group.

    Items carry ``label`` (the ``target``: ``class`` = 18-way, or ``mask``/``gender``/``age``) and
    ``mask``, ``gender``, ``age`` for multi-head models. A person's 7 images cover every mask
    state, so stratifying people on gender x age stratifies images on the 18-way class.
    """

    task_name = "mask_age_gender"

    def __init__(
        self,
        target: str = "class",
        label_corrections: str | None = None,
        synthetic: dict | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if target not in TARGETS:
            raise UserError(f"data.target: '{target}' is not one of {', '.join(TARGETS)}")
        self.target = target
        self.label_corrections = label_corrections
        self.synthetic = {"num_people": 500, "image_size": list(self.image_size), "seed": 0, **(to_plain(synthetic) or {})}
        self.head_class_counts: dict[str, list[int]] = {}

    @property
    def class_names(self) -> list[str]:
        return TARGETS[self.target]

    def read_splits(self, root: Path) -> dict[str, list[Sample]]:
        records = read_boostcamp_train(root, self.label_corrections, self.skip_bad_files)
        samples = []
        for r in records:
            labels = {"mask": r.mask, "gender": r.gender, "age": r.age_group}
            labels["label"] = r.class_id if self.target == "class" else labels[self.target]
            samples.append(Sample(r.path, labels))
        strata = [r.gender * len(AGE_NAMES) + r.age_group for r in records]
        splits = self.split_samples(samples, [r.person_id for r in records], strata, what="people")
        self.head_class_counts = {name: class_counts(splits["train"], len(names), name) for name, names in HEADS.items()}
        return splits

    def extra_info(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "heads": HEADS,
            "head_class_counts": self.head_class_counts,
            "combine": "boostcamp",
            "combine_class_names": list(CLASS_NAMES),
        }

    def synthetic_name(self) -> str:
        s = self.synthetic
        return f"boostcamp_p{s['num_people']}_{s['image_size'][0]}x{s['image_size'][1]}_s{s['seed']}"

    def generate(self, folder: Path) -> None:
        s = self.synthetic
        generate_boostcamp(folder, s["num_people"], None, tuple(s["image_size"]), s["seed"])


def crop_box(box: tuple[float, ...], margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """``box`` grown by ``margin`` x its size on every side, rounded outwards and clipped to the image."""
    x0, y0, x1, y1 = box
    dx, dy = margin * (x1 - x0), margin * (y1 - y0)
    return (
        max(0, int(x0 - dx)),
        max(0, int(y0 - dy)),
        min(width, math.ceil(x1 + dx)),
        min(height, math.ceil(y1 + dy)),
    )


class FaceMaskCropsDataModule(ImageClassificationDataModule):
    """Face crops of a Pascal VOC face-mask dataset (``images/`` + ``annotations/``) as a 3-class task.

    The split is by source image, stratified on per-image object counts (``split_voc_images``), so no
    image gives crops to two splits. ``margin`` widens each box by that fraction of its size.
    """

    task_name = "facemask_crops"

    def __init__(
        self,
        class_names: list[str] | None = None,
        margin: float = 0.15,
        min_box_size: int = 4,
        images_dir: str = "images",
        annotations_dir: str = "annotations",
        unknown_class: str = "error",
        synthetic: dict | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self._class_names = list(to_plain(class_names) or FACEMASK_CLASSES)
        self.margin = margin
        self.min_box_size = min_box_size
        self.images_dir = images_dir
        self.annotations_dir = annotations_dir
        self.unknown_class = unknown_class
        self.synthetic = {"num_images": 300, "image_size": [192, 192], "seed": 0, **(to_plain(synthetic) or {})}

    @property
    def class_names(self) -> list[str]:
        return self._class_names

    def read_splits(self, root: Path) -> dict[str, list[Sample]]:
        images = read_voc_dataset(root, self._class_names, self.images_dir, self.annotations_dir,
                                  self.skip_bad_files, self.unknown_class)
        if not any(image.objects for image in images):
            raise UserError(f"data.root: no annotated faces in '{root}' (expected {self.annotations_dir}/*.xml with <object>s)")
        split = split_voc(self.splitter, root, images, len(self._class_names))
        return {name: self.crops(split_images) for name, split_images in split.items()}

    def crops(self, images: list[VocImage]) -> list[Sample]:
        """One sample per object at least ``min_box_size`` pixels on each side."""
        samples = []
        for image in images:
            for obj in image.objects:
                x0, y0, x1, y1 = obj.box
                if min(x1 - x0, y1 - y0) < self.min_box_size:
                    continue
                box = crop_box(obj.box, self.margin, image.width, image.height)
                samples.append(Sample(image.image_path, {"label": obj.label}, box, group=str(image.image_path)))
        return samples

    def synthetic_name(self) -> str:
        s = self.synthetic
        return f"voc_facemask_n{s['num_images']}_{s['image_size'][0]}x{s['image_size'][1]}_s{s['seed']}"

    def generate(self, folder: Path) -> None:
        s = self.synthetic
        generate_voc_facemask(folder, s["num_images"], tuple(s["image_size"]), s["seed"])
