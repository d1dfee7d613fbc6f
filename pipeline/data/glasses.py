"""Glasses-on-eyes data: MeGlass lists or class folders, eye-zone preprocessing, share-balanced batches.

Every image becomes its eye zone (top half of the face, black-padded square, ``image_size``) before
anything else; :meth:`GlassesDataModule.preprocess` (eye zone + normalisation) is the one evaluation
path used by val/test, predict, export checks and the service. Training adds the ``augment`` list
between the two. With ``detect_face=true`` (unaligned photos) the largest Haar-cascade face is cropped
first; a photo without a face is ``None`` at prediction time ("no_face") and is used whole in training.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset, Sampler

from pipeline.data.base import BaseDataModule
from pipeline.data.eye_zone import EyeZonePreprocessor
from pipeline.data.formats.image_folder import read_labelled_images
from pipeline.data.formats.meglass import read_meglass
from pipeline.data.io import load_image
from pipeline.data.samplers.share import ShareBatchSampler
from pipeline.data.splits import split_by_group
from pipeline.data.synthetic.glasses import LIST_FILE, generate_meglass
from pipeline.data.transforms import apply_transform, build_transform
from pipeline.utils.errors import UserError, require_path

log = logging.getLogger(__name__)

COMPLETE_MARKER = ".complete"
FORMATS = ("meglass", "folder")
SAMPLERS = ("share", "shuffle")


def identity_of(path: Path) -> str:
    """The person an image shows, for person-disjoint splits: MeGlass ``<person>@<photo>.jpg`` names,
    the synthetic ``id<person>_<index>.jpg`` names, else the file itself."""
    stem = path.stem
    if "@" in stem:
        return stem.rsplit("@", 1)[0]
    if stem.startswith("id") and "_" in stem:
        return stem.split("_", 1)[0]
    return str(path)


class EyeZoneImages(Dataset):
    """``{"image": CHW float, "label": long}`` per file: eye zone, then ``transform``."""

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], eye_zone: EyeZonePreprocessor, transform):
        self.paths = list(paths)
        self.labels = list(labels)
        self.eye_zone = eye_zone
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rgb = load_image(self.paths[index])
        zone = self.eye_zone(rgb)
        if zone is None:  # no face found in a training photo: its whole frame is the best guess
            zone = self.eye_zone.eye_zone(rgb)
        return {"image": apply_transform(self.transform, zone), "label": torch.tensor(self.labels[index])}


class GlassesDataModule(BaseDataModule):
    """Glasses / no glasses on the eyes; synthetic MeGlass-format data when ``root`` is null.

    ``format=folder`` reads ``root/<class>/`` with ``class_names`` (negative first, positive second).
    """

    def __init__(
        self,
        root: str | None = None,
        format: str = "meglass",
        list_file: str | None = None,
        cache_dir: str = "data/synthetic",
        synthetic: DictConfig | dict | None = None,
        image_size: int = 82,
        detect_face: bool = False,
        face_model: str | None = None,
        face_margin: float = 0.1,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        augment: Sequence | None = None,
        sampler: str = "share",
        min_share: float = 0.2,
        max_share: float = 0.5,
        splits: DictConfig | dict | None = None,
        class_names: Sequence[str] = ("no_glasses", "glasses"),
        **loader_kwargs: Any,
    ) -> None:
        super().__init__(**loader_kwargs)
        if format not in FORMATS:
            raise UserError(f"data.format: '{format}' is not one of {list(FORMATS)}")
        if sampler not in SAMPLERS:
            raise UserError(f"data.sampler: '{sampler}' is not one of {list(SAMPLERS)}")
        self.root = root
        self.format = format
        self.list_file = list_file
        self.cache_dir = Path(cache_dir)
        self.synthetic = _plain(synthetic) or {}
        self.image_size = image_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.augment = _plain(augment) or []
        self.sampler = sampler
        self.share_range = (min_share, max_share)
        self.fractions = _plain(splits) or {"train": 0.8, "val": 0.1, "test": 0.1}
        self.eye_zone = EyeZonePreprocessor(image_size, detect_face, face_margin, face_model)
        self.eval_transform = build_transform(None, None, self.mean, self.std)
        self.folder_classes = list(class_names)
        self.class_names: list[str] = []
        self.class_counts: list[int] = []

    # --- data on disk --------------------------------------------------------------------------
    def synthetic_root(self) -> Path:
        """Cache folder named after the generator parameters that change the data."""
        params = "_".join(f"{key}{value}" for key, value in sorted(self.synthetic.items()))
        return self.cache_dir / f"glasses_meglass_{params}"

    def prepare_data(self) -> None:
        if self.root is not None:
            return
        root = self.synthetic_root()
        if (root / COMPLETE_MARKER).is_file():
            return
        log.info("Generating synthetic glasses data into %s", root)
        generate_meglass(root, **self.synthetic)
        (root / COMPLETE_MARKER).write_text("done\n")

    def data_root(self) -> Path:
        return require_path(self.root, "data.root", "folder") if self.root is not None else self.synthetic_root()

    def read_records(self) -> tuple[list[Path], list[int], list[str]]:
        """Image paths, labels and class names from the MeGlass list or the class folders."""
        root = self.data_root()
        if self.format == "meglass":
            list_file = require_path(root / (self.list_file or LIST_FILE), "data.list_file", "MeGlass list file")
            records, class_names = read_meglass(list_file, root)
        else:
            records, class_names = read_labelled_images(root, self.folder_classes)
        return [r.path for r in records], [r.label for r in records], class_names

    def build_datasets(self) -> dict[str, Dataset]:
        paths, labels, self.class_names = self.read_records()
        parts = split_by_group([identity_of(p) for p in paths], self.fractions, self.seed, strata=labels)
        train_transform = build_transform(self.augment, None, self.mean, self.std)
        datasets = {}
        for split, indices in parts.items():
            if len(indices) == 0:
                raise UserError(f"data.splits: split '{split}' is empty ({len(paths)} images); raise its fraction")
            transform = train_transform if split == "train" else self.eval_transform
            datasets[split] = EyeZoneImages([paths[i] for i in indices], [labels[i] for i in indices], self.eye_zone, transform)
        self.class_counts = np.bincount(datasets["train"].labels, minlength=2).tolist()
        return datasets

    # --- what the model, export and service need ---------------------------------------------
    @property
    def info(self) -> dict[str, Any]:
        return {
            "task": "glasses",
            "class_names": self.class_names or self.folder_classes,
            "input_size": [3, self.image_size, self.image_size],
            "mean": list(self.mean),
            "std": list(self.std),
            "class_counts": self.class_counts or None,
            "detect_face": self.eye_zone.detect_face,
        }

    def preprocess(self, image: np.ndarray) -> torch.Tensor | None:
        zone = self.eye_zone(image)
        return None if zone is None else apply_transform(self.eval_transform, zone)

    def train_sampler(self, dataset: Dataset) -> Sampler:
        if self.sampler == "shuffle":
            return super().train_sampler(dataset)
        rank, world_size = self._distributed()
        return ShareBatchSampler(dataset.labels, self.batch_size, *self.share_range, seed=self.seed,
                                 rank=rank, world_size=world_size)


def _plain(node: Any) -> Any:
    """Plain Python containers from a (possibly) DictConfig/ListConfig node."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
