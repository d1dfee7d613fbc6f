"""The toy task's data: 16x16 images that are either bright or dark, drawn in memory from a seed."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pipeline.data.base import BaseDataModule
from pipeline.utils.contracts import DataInfo

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
SIZE = 16


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """RGB uint8 (any size) -> normalised CHW float of SIZE x SIZE (nearest-neighbour resize)."""
    rows = np.linspace(0, rgb.shape[0] - 1, SIZE).astype(int)
    cols = np.linspace(0, rgb.shape[1] - 1, SIZE).astype(int)
    image = torch.from_numpy(rgb[rows][:, cols].astype(np.float32) / 255).permute(2, 0, 1)
    return (image - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def draw(rng: np.random.Generator, bright: bool) -> np.ndarray:
    base = 170 if bright else 60
    return np.clip(rng.normal(base, 40, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)


class Brightness(Dataset):
    def __init__(self, size: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.labels = rng.integers(0, 2, size)
        self.images = [draw(rng, bool(label)) for label in self.labels]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": to_tensor(self.images[index]), "label": int(self.labels[index])}


class BrightnessDataModule(BaseDataModule):
    def __init__(self, size: int = 128, **kwargs) -> None:
        super().__init__(**kwargs)
        self.size = size

    def build_datasets(self) -> dict[str, Dataset]:
        return {split: Brightness(self.size, self.seed + i) for i, split in enumerate(("train", "val", "test"))}

    @property
    def info(self) -> DataInfo:
        return DataInfo("brightness", ["dark", "bright"], (3, SIZE, SIZE), MEAN, STD)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return to_tensor(image)
