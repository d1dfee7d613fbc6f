"""Siamese shapes-pair task data: fresh seeded training pairs, fixed seeded val and test pairs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from pipeline.data.base import BaseDataModule
from pipeline.data.prediction_inputs import PredictionInput, read_image_pairs
from pipeline.data.samplers.epoch_seeded import EpochSampler
from pipeline.data.synthetic.shapes import SHAPE_NAMES, sample_pair
from pipeline.data.transforms import apply_transform, build_transform
from pipeline.utils.contracts import DataInfo

SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


class ShapesPairs(Dataset):
    """Pairs generated from ``(seed, split, index)``: the same index always gives the same pair.

    Training indices run past ``len(self)`` (see :class:`FreshPairsSampler`), so every epoch draws
    new pairs while staying reproducible; val and test use indices ``0..size-1`` and never change.
    """

    def __init__(self, size: int, split: str, seed: int, image_size: int = 32, rotate: bool = False, transform=None):
        self.size = size
        self.split_code = SPLIT_CODES[split]
        self.seed = seed
        self.image_size = image_size
        self.rotate = rotate
        self.transform = transform

    def __len__(self) -> int:
        return self.size

    def raw(self, index: int) -> tuple[np.ndarray, np.ndarray, int, int]:
        rng = np.random.default_rng([self.seed, self.split_code, index])
        return sample_pair(rng, self.image_size, self.rotate)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image1, image2, shape1, shape2 = self.raw(index)
        return {
            "image1": apply_transform(self.transform, image1),
            "image2": apply_transform(self.transform, image2),
            "label": torch.tensor(float(shape1 == shape2)),
        }


class FreshPairsSampler(EpochSampler):
    """Yields indices ``epoch * size + i``: new pairs every epoch, identical after a resume."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1):
        super().__init__(0, rank, world_size)
        self.size = size

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world_size))

    def __iter__(self) -> Iterator[int]:
        start = self.epoch * self.size
        return iter(range(start + self.rank, start + self.size, self.world_size))


class ShapesPairsDataModule(BaseDataModule):
    """Pairs of ``image_size`` images with a circle or a square; label 1 when the shapes match."""

    mean = (0.5, 0.5, 0.5)
    std = (0.5, 0.5, 0.5)

    def __init__(
        self,
        train_size: int = 10000,
        val_size: int = 2000,
        test_size: int = 2000,
        image_size: int = 32,
        rotate: bool = False,
        **loader_kwargs,
    ) -> None:
        super().__init__(**loader_kwargs)
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.image_size = image_size
        self.rotate = rotate

    @property
    def info(self) -> DataInfo:
        return DataInfo("siamese", ["different", "same"], (3, self.image_size, self.image_size), list(self.mean),
                        list(self.std), shape_names=list(SHAPE_NAMES))

    def eval_transform(self):
        """The preprocessing shared by test, predict, export and serve."""
        return build_transform(None, (self.image_size, self.image_size), self.mean, self.std)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return apply_transform(self.eval_transform(), image)

    def predict_items(self, source: Path, options: dict[str, Any]) -> list[PredictionInput]:
        """Image pairs: a ``path1,path2`` CSV or a folder with two sub-folders paired by file name."""
        return read_image_pairs(source)

    def build_datasets(self) -> dict[str, Dataset]:
        transform = self.eval_transform()
        return {
            split: ShapesPairs(size, split, self.seed, self.image_size, self.rotate, transform)
            for split, size in self.sizes.items()
        }

    def train_sampler(self, dataset: Dataset) -> Sampler[int]:
        rank, world_size = self._distributed()
        return FreshPairsSampler(len(dataset), rank, world_size)
