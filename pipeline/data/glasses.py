"""Glasses-on-eyes data: MeGlass lists or class folders, eye-zone preprocessing, share-balanced batches.

Every image becomes its eye zone (top half of the face, black-padded square, ``image_size``) as the
first step of every pipeline; :meth:`GlassesDataModule.preprocess` (eye zone + normalisation) is the
evaluation path used by val/test, predict, export checks and the service, and training adds the
``augment`` list in between. With ``detect_face=true`` (unaligned photos) the largest face (OpenCV
Haar cascade by default) is cropped first; a photo without a face is ``None`` at prediction time
(the "no_face" answer) and is used whole in training.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from pipeline.data.base import to_plain
from pipeline.data.classification import ImageClassificationDataModule, Sample
from pipeline.data.eye_zone import EyeZonePreprocessor
from pipeline.data.formats.image_folder import read_labelled_images
from pipeline.data.formats.meglass import CLASS_NAMES, read_meglass
from pipeline.data.samplers.share import ShareBatchSampler
from pipeline.data.splits import groups_from_pattern
from pipeline.data.synthetic.glasses import LIST_FILE, generate_meglass
from pipeline.data.transforms import apply_transform, build_transform
from pipeline.utils.errors import UserError, require_path

log = logging.getLogger(__name__)

FORMATS = ("auto", "meglass", "folder")


def identity_of(path: Path) -> str:
    """The person an image shows, for person-disjoint splits: MeGlass ``<person>@<photo>.jpg`` names,
    the synthetic ``id<person>_<index>.jpg`` names, else the file itself."""
    stem = path.stem
    if "@" in stem:
        return stem.rsplit("@", 1)[0]
    if stem.startswith("id") and "_" in stem:
        return stem.split("_", 1)[0]
    return str(path)


class EyeZone(A.ImageOnlyTransform):
    """Albumentations step: image -> its eye zone; the whole frame when no face is found (training only)."""

    def __init__(self, eye_zone: EyeZonePreprocessor, p: float = 1.0):
        super().__init__(p=p)
        self.eye_zone = eye_zone

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        zone = self.eye_zone(img)
        return zone if zone is not None else self.eye_zone.eye_zone(img)


class GlassesDataModule(ImageClassificationDataModule):
    """Glasses / no glasses on the eyes; synthetic MeGlass-format data when ``root`` is null.

    ``format=meglass`` reads ``root/<list_file>`` (``<image path> <0|1>`` lines); ``format=folder``
    reads ``root/<class>/`` with ``class_names`` (negative first, positive second); ``auto`` takes the
    one the root holds. Splits are person-disjoint when file names carry the person (MeGlass,
    synthetic) or ``group_by`` (a regex on the file name) finds it. ``sampler=share`` puts
    ``min_share``..``max_share`` glasses images in every training batch.
    """

    SAMPLERS = ("share", "random", "weighted")

    task_name = "glasses"

    def __init__(
        self,
        format: str = "auto",
        list_file: str | None = None,
        class_names: Sequence[str] = CLASS_NAMES,
        group_by: str | None = None,
        synthetic: dict | None = None,
        image_size: int = 82,
        detect_face: bool = False,
        face_model: str | None = None,
        face_margin: float = 0.1,
        sampler: str = "share",
        min_share: float = 0.2,
        max_share: float = 0.5,
        **kwargs: Any,
    ) -> None:
        if format not in FORMATS:
            raise UserError(f"data.format: '{format}' is not one of {', '.join(FORMATS)}")
        super().__init__(image_size=(image_size, image_size), sampler=sampler, **kwargs)
        self.share_range = (min_share, max_share)
        self.format = format
        self.list_file = list_file
        self.group_by = group_by
        self.folder_classes = list(to_plain(class_names))
        self.synthetic = to_plain(synthetic) or {}
        self.eye_zone = EyeZonePreprocessor(image_size, detect_face, face_margin, face_model)
        self.normalize = build_transform(None, self.image_size, self.mean, self.std)

    @property
    def class_names(self) -> list[str]:
        return list(CLASS_NAMES) if self.format == "meglass" else self.folder_classes

    def resolve_format(self, root: Path) -> str:
        """``format``, or for ``auto`` the layout ``root`` holds: a MeGlass list, else class folders."""
        if self.format != "auto":
            return self.format
        if self.list_file or (root / LIST_FILE).is_file():
            return "meglass"
        if any((root / name).is_dir() for name in (*self.folder_classes, "train")):
            return "folder"
        raise UserError(f"data.root: '{root}' holds neither a MeGlass list ({LIST_FILE}, or set data.list_file) nor the "
                        f"class folders {'/, '.join(self.folder_classes)}/ (set data.class_names=[negative,positive])")

    def read_splits(self, root: Path) -> dict[str, list[Sample]]:
        self.format = self.resolve_format(root)
        if self.format == "meglass":
            list_file = require_path(root / (self.list_file or LIST_FILE), "data.list_file", "MeGlass list file")
            records, _ = read_meglass(list_file, root)
        else:
            records, _ = read_labelled_images(root, self.folder_classes)
        samples = [Sample(r.path, {"label": r.label}) for r in records]
        presplit = [r.split for r in records] if getattr(records[0], "split", None) else None
        groups, what = self.people([r.path for r in records]), f"people ({self.group_by})" if self.group_by else "people"
        if not self.group_by and presplit is None and len(set(groups)) == len(groups):
            log.warning("data.group_by: no file name carries its person (MeGlass '<person>@<photo>' names), so the split "
                        "is per image and one person's photos may sit in train and test; name the person with a regex, "
                        "e.g. \"data.group_by='^([^_]+)_'\" for '<person>_<photo>' names")
            what = "images"
        return self.split_samples(samples, groups, [r.label for r in records], presplit, what=what)

    def people(self, paths: list[Path]) -> list[str]:
        """The person of each image: ``group_by``'s match on the file name, else ``identity_of``."""
        return groups_from_pattern([p.name for p in paths], self.group_by) if self.group_by else list(map(identity_of, paths))

    def synthetic_name(self) -> str:
        params = "_".join(f"{key}{value}" for key, value in sorted(self.synthetic.items()))
        return f"glasses_meglass_{params}"

    def generate(self, folder: Path) -> None:
        generate_meglass(folder, **self.synthetic)

    def extra_info(self) -> dict[str, Any]:
        return {"detect_face": self.eye_zone.detect_face, "face_margin": self.eye_zone.margin}

    def prepare(self) -> tuple[A.Compose, str]:
        # The eye zone comes first in training and evaluation, so augmentations see the crop the model will see.
        zone = self.eye_zone
        return A.Compose([EyeZone(zone)]), f"eyezone{zone.size}_face{zone.detect_face}_{zone.face_model}_m{zone.margin}_min{zone.min_face_size}"

    def preprocess(self, image: np.ndarray) -> torch.Tensor | None:
        zone = self.eye_zone(image)
        return None if zone is None else apply_transform(self.normalize, zone)

    def train_sampler(self, dataset: Dataset) -> Sampler:
        if self.sampler != "share":
            return super().train_sampler(dataset)
        rank, world_size = self._distributed()
        return ShareBatchSampler(dataset.labels(), self.batch_size, *self.share_range, seed=self.seed,
                                 rank=rank, world_size=world_size)
