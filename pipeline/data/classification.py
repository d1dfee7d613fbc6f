"""Image classification data: labelled image files (optionally a crop box each), split, preprocessed.

``ImageClassificationDataModule`` holds what every classification dataset shares: the albumentations
training pipeline and THE eval preprocessing (``preprocess``), the unreadable-file check, class
counts for ``weight: balanced`` losses, the weighted sampler option, and the synthetic-data cache.
``ImageFolderDataModule`` reads users' own ``root/<class>/`` folders or a ``path,label`` CSV.
"""

from __future__ import annotations

import logging
import shutil
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from pipeline.data.base import BaseDataModule, to_plain
from pipeline.data.cache import CachedImages, decode
from pipeline.data.formats.boostcamp import MASK_NAMES, read_boostcamp_train
from pipeline.data.formats.image_folder import drop_unreadable, read_labelled_images
from pipeline.data.io import load_image
from pipeline.data.samplers.weighted import InverseFrequencySampler
from pipeline.data.splits import groups_from_pattern, relative_key
from pipeline.data.synthetic.boostcamp import generate_boostcamp
from pipeline.data.synthetic.cache import ensure_generated
from pipeline.data.transforms import IMAGENET_MEAN, IMAGENET_STD, apply_transform, build_transform
from pipeline.utils.contracts import DataInfo
from pipeline.utils.errors import UserError, require_path

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Sample:
    """One image (or a ``box`` crop of it) with its labels: ``label`` plus any per-head labels, and the
    ``group`` (person, source image) its split kept together, when the split had one."""

    path: Path
    labels: dict[str, int]
    box: tuple[int, int, int, int] | None = None
    group: str | None = None


class ClassificationDataset(Dataset):
    """Items ``{"image": CHW float, "label": long, <head>: long ...}`` from samples and a transform.

    ``prepare`` is the deterministic preprocessing each image gets after its crop (a resize, an eye
    zone); ``images`` holds its result for every sample, decoded once (see ``pipeline.data.cache``).
    """

    def __init__(self, samples: Sequence[Sample], transform, prepare: A.Compose | None = None,
                 images: CachedImages | None = None) -> None:
        self.samples = list(samples)
        self.transform = transform
        self.prepare = prepare
        self.images = images

    def __len__(self) -> int:
        return len(self.samples)

    def labels(self, key: str = "label") -> np.ndarray:
        return np.array([s.labels[key] for s in self.samples], dtype=np.int64)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.samples[index]
        image = self.images[index] if self.images is not None else decode(sample.path, sample.box, self.prepare)
        item = {key: torch.tensor(value, dtype=torch.long) for key, value in sample.labels.items()}
        item["image"] = apply_transform(self.transform, image)
        return item


def class_counts(samples: Sequence[Sample], num_classes: int, key: str = "label") -> list[int]:
    """Samples per class index."""
    counts = Counter(s.labels[key] for s in samples)
    return [counts.get(i, 0) for i in range(num_classes)]


def readable(samples: list[Sample], skip_bad_files: bool) -> list[Sample]:
    """Samples whose image decodes; UserError naming a bad file unless ``skip_bad_files``."""
    unique = list({s.path: s for s in samples}.values())
    kept = {s.path for s in drop_unreadable(unique, skip_bad_files)}
    return [s for s in samples if s.path in kept]


class ImageClassificationDataModule(BaseDataModule):
    """Base for classification datasets; subclasses give ``read_splits`` and ``class_names``.

    ``root`` null means the subclass's synthetic dataset, generated into ``cache_dir`` on first use.
    """

    SAMPLERS = ("random", "weighted")

    task_name = "classification"

    def __init__(
        self,
        root: str | None = None,
        cache_dir: str | None = None,
        image_size: Sequence[int] = (96, 96),
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        augment: Sequence | None = None,
        sampler: str = "random",
        skip_bad_files: bool = False,
        check_images: bool = True,
        **loader_kwargs,
    ) -> None:
        super().__init__(sampler=sampler, **loader_kwargs)
        self.root = root
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.image_size = [int(v) for v in image_size]
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]
        self.augment = to_plain(augment) or []
        self.skip_bad_files = skip_bad_files
        self.check_images = check_images
        self.train_class_counts: list[int] = []

    # --- to implement ---------------------------------------------------------------------------
    @property
    def class_names(self) -> list[str]:
        raise NotImplementedError

    def read_splits(self, root: Path) -> dict[str, list[Sample]]:
        raise NotImplementedError

    def synthetic_name(self) -> str:
        """Cache folder name of the synthetic dataset (its generator parameters included)."""
        raise NotImplementedError

    def generate(self, folder: Path) -> None:
        """Write the synthetic dataset into ``folder``."""
        raise NotImplementedError

    def extra_info(self) -> dict[str, Any]:
        """The task's own ``DataInfo`` fields."""
        return {}

    # --- data location --------------------------------------------------------------------------
    @property
    def data_root(self) -> Path:
        if self.root:
            return require_path(self.root, "data.root")
        if self.cache_dir is None:
            raise UserError("data.cache_dir: needed for the synthetic dataset when data.root is null")
        return self.cache_dir / self.synthetic_name()

    def prepare_data(self) -> None:
        """Generate the synthetic dataset once and reuse it after (``ensure_generated``)."""
        if not self.root:
            ensure_generated(self.data_root, self.generate)

    # --- datasets -------------------------------------------------------------------------------
    def build_datasets(self) -> dict[str, Dataset]:
        splits = self.read_splits(self.data_root)
        cached = {name: self._decoded(samples) for name, samples in splits.items()}
        for name in ("train", "val"):
            if name not in cached or not cached[name][0]:
                raise UserError(f"data.split: the {name} split is empty (more data or other data.split fractions needed)")
        self.train_class_counts = class_counts(cached["train"][0], len(self.class_names))
        train_transform = build_transform(self.augment, self.image_size, self.mean, self.std)
        eval_transform = build_transform(None, self.image_size, self.mean, self.std)
        return {
            name: ClassificationDataset(samples, train_transform if name == "train" else eval_transform, self.prepare()[0], images)
            for name, (samples, images) in cached.items()
        }

    def prepare(self) -> tuple[A.Compose, str]:
        """The deterministic preprocessing after the crop, done once when cached (the resize), and its signature:
        what it does, with its parameters (part of the cache key)."""
        return A.Compose([A.Resize(*self.image_size)]), f"resize{self.image_size[0]}x{self.image_size[1]}"

    def _decoded(self, samples: list[Sample]) -> tuple[list[Sample], CachedImages | None]:
        """The samples whose image decodes, with their decoded images when ``data.cache`` keeps them."""
        images = self.decoded([(s.path, s.box) for s in samples], *self.prepare(), self.image_size)
        if images is None:
            return (readable(samples, self.skip_bad_files) if self.check_images else samples), None
        bad = set(images.unreadable())
        if bad and not self.skip_bad_files:
            load_image(samples[min(bad)].path)  # raises the reader's own error naming the file
        if bad:
            log.warning("skipped %d unreadable image(s) of %d", len(bad), len(samples))
        keep = [i for i in range(len(samples)) if i not in bad]
        return [samples[i] for i in keep], images.subset(keep) if bad else images

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """The preprocessing shared by val, test, predict, export and serve."""
        return apply_transform(build_transform(None, self.image_size, self.mean, self.std), image)

    @property
    def info(self) -> DataInfo:
        return DataInfo(self.task_name, list(self.class_names), (3, *self.image_size), self.mean, self.std,
                        class_counts=self.train_class_counts, **self.extra_info())

    def train_sampler(self, dataset: Dataset) -> Sampler[int]:
        if self.sampler != "weighted":
            return super().train_sampler(dataset)
        rank, world_size = self._distributed()
        return InverseFrequencySampler(dataset.labels(), self.seed, rank=rank, world_size=world_size)

    def split_samples(
        self,
        samples: list[Sample],
        groups: Sequence,
        strata: Sequence,
        presplit: Sequence[str] | None = None,
        what: str = "groups",
    ) -> dict[str, list[Sample]]:
        """Split ``samples`` with ``self.splitter``: a split file, the data's own layout, or a group-disjoint,
        stratified, seeded split by ``data.split``. Keys are the paths relative to the data root."""
        if not samples:
            raise UserError(f"data.root: no samples found in '{self.data_root}'")
        base = self.data_root if self.data_root.is_dir() else self.data_root.parent
        keys = [relative_key(s.path, base) for s in samples]
        indices = self.splitter.choose(keys, groups, strata=strata, presplit=presplit, what=what)
        if what != "images":  # the report's leak check reads the groups; an image's own index is none
            samples = [replace(sample, group=str(group)) for sample, group in zip(samples, groups, strict=True)]
        return {name: [samples[i] for i in idx] for name, idx in indices.items()}


class ImageFolderDataModule(ImageClassificationDataModule):
    """Users' own images: ``root/<class name>/*`` folders, pre-split ``root/{train,val,test}/<class>/``
    folders, or a ``path,label[,split]`` CSV.

    ``group_by`` keeps a group in one split: a CSV column, or a regex on the file name whose first
    capture group is the group (a person id); without it the split is per image. The default
    (``root`` null) is a small synthetic folder dataset: boostcamp-style faces sorted into ``wear/``,
    ``incorrect/``, ``not_wear/`` by mask state, named ``<person>_<file>`` and split by person.
    """

    SYNTHETIC_GROUP_BY = r"^([^_]+)_"

    def __init__(
        self,
        class_names: Sequence[str] | None = None,
        group_by: str | None = None,
        synthetic: dict | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.fixed_class_names = list(to_plain(class_names)) if class_names else None
        self.group_by = group_by if group_by or self.root else self.SYNTHETIC_GROUP_BY
        self.synthetic = {"num_people": 60, "image_size": [64, 48], "seed": 0, **(to_plain(synthetic) or {})}
        self._class_names: list[str] | None = None

    @property
    def class_names(self) -> list[str]:
        if self._class_names is None:
            self.setup()
        return self._class_names

    def read_splits(self, root: Path) -> dict[str, list[Sample]]:
        records, self._class_names = read_labelled_images(root, self.fixed_class_names,
                                                             skip_bad_files=self.skip_bad_files)
        samples = [Sample(r.path, {"label": r.label}) for r in records]
        labels = [s.labels["label"] for s in samples]
        presplit = [r.split for r in records] if records and records[0].split else None
        if not self.group_by:
            return self.split_samples(samples, list(range(len(samples))), labels, presplit, what="images")
        if self.group_by in records[0].columns:
            groups = [r.columns[self.group_by] for r in records]
        else:
            groups = groups_from_pattern([r.path.name for r in records], self.group_by)
        return self.split_samples(samples, groups, labels, presplit, what=f"groups ({self.group_by})")

    def synthetic_name(self) -> str:
        s = self.synthetic
        return f"image_folder_mask_p{s['num_people']}_{s['image_size'][0]}x{s['image_size'][1]}_s{s['seed']}"

    def generate(self, folder: Path) -> None:
        s = self.synthetic
        source = generate_boostcamp(folder / "_boostcamp", s["num_people"], 1, tuple(s["image_size"]), s["seed"])
        for record in read_boostcamp_train(source):
            target = folder / MASK_NAMES[record.mask] / f"{record.person_id}_{record.path.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(record.path, target)
        shutil.rmtree(source)
