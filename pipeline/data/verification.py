"""Face-verification data: identity-disjoint splits, P x K training batches, optional face-part cutout.

Reads the Kryptonite folder format (``pipeline.data.formats.verification``) from ``data.root``, or
generates the synthetic set into the cache on first use when ``root`` is null. Every split holds
whole identities; val and test keep all their real and fake images, and the metrics use all pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import albumentations as A
import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset

from pipeline.data.base import BaseDataModule, to_plain
from pipeline.data.cache import CachedImages
from pipeline.data.face_parts import FACE_PARTS, FacePartCutout, read_landmarks_csv
from pipeline.data.formats.verification import VerificationDataset, read_verification_splits
from pipeline.data.io import load_image
from pipeline.data.prediction_inputs import PredictionInput, has_columns, read_image_pairs, read_row_pairs
from pipeline.data.samplers.pk import PKBatchSampler
from pipeline.data.splits import relative_key
from pipeline.data.synthetic.cache import ensure_generated
from pipeline.data.synthetic.verification import generate_verification
from pipeline.data.transforms import apply_transform, build_transform
from pipeline.utils.contracts import DataInfo
from pipeline.utils.errors import UserError, require_path

SYNTHETIC_DEFAULTS = {"num_identities": 200, "images_per_identity": 6, "fakes_per_identity": 6, "seed": 0}


class VerificationDataModule(BaseDataModule):
    """Images of people (real and fake) -> ``{"image", "label" (identity), "is_fake", "index"}``.

    ``batch_size`` = P identities x ``images_per_identity`` (K) per training batch; ``passes``
    rounds over the training identities make one epoch. ``cutout`` = ``{parts: [...], p: ...}``
    blacks out one face part per training image, from ``landmarks_csv`` (default
    ``<root>/landmarks.csv``, which the synthetic generator writes).
    """

    def __init__(
        self,
        root: str | None = None,
        cache_dir: str = "data/synthetic",
        synthetic: DictConfig | dict | None = None,
        image_size: int = 32,
        images_per_identity: int = 6,
        passes: int = 1,
        augment: Sequence | None = None,
        cutout: DictConfig | dict | None = None,
        landmarks_csv: str | None = None,
        skip_bad_files: bool = False,
        mean: Sequence[float] = (0.5, 0.5, 0.5),
        std: Sequence[float] = (0.5, 0.5, 0.5),
        **loader_kwargs,
    ) -> None:
        super().__init__(**loader_kwargs)
        self.root = root
        self.cache_dir = Path(cache_dir)
        self.synthetic = {**SYNTHETIC_DEFAULTS, **(to_plain(synthetic) or {})}
        self.image_size = image_size
        self.images_per_identity = images_per_identity
        self.passes = passes
        self.augment = to_plain(augment) or []
        self.cutout = to_plain(cutout)
        self.landmarks_csv = landmarks_csv
        self.skip_bad_files = skip_bad_files
        self.mean, self.std = tuple(mean), tuple(std)
        self.num_identities = 0
        self.val_has_fakes = True
        if batch_size_rest := self.batch_size % images_per_identity:
            raise UserError(
                f"hyp.batch_size: {self.batch_size} is not a multiple of data.images_per_identity={images_per_identity} "
                f"(P x K batches; remove {batch_size_rest})"
            )

    # --- data on disk ------------------------------------------------------------------------
    def synthetic_root(self) -> Path:
        """Cache folder named after the generator parameters, so a change regenerates."""
        name = "verification_" + "_".join(f"{k}{v}" for k, v in sorted(self.synthetic.items())) + f"_size{self.image_size}"
        return self.cache_dir / name

    def data_root(self) -> Path:
        if self.root is not None:
            return require_path(self.root, "data.root", "dataset folder")
        return self.synthetic_root()

    def prepare_data(self) -> None:
        if self.root is not None:
            require_path(self.root, "data.root", "dataset folder")
            return
        ensure_generated(self.synthetic_root(),
                         lambda folder: generate_verification(folder, image_size=self.image_size, **self.synthetic))

    # --- datasets ----------------------------------------------------------------------------
    def eval_transform(self):
        """The preprocessing shared by val, test, predict, export and serve."""
        return build_transform(None, (self.image_size, self.image_size), self.mean, self.std)

    def train_transform(self):
        steps = list(self.augment)
        if self.cutout:
            parts = tuple(self.cutout.get("parts", FACE_PARTS))
            # First: the landmarks are in the stored image's pixel coordinates.
            steps.insert(0, FacePartCutout(parts=parts, p=float(self.cutout.get("p", 0.5))))
        return build_transform(steps, (self.image_size, self.image_size), self.mean, self.std)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        return apply_transform(self.eval_transform(), image)

    def predict_items(self, source: Path, options: dict[str, Any]) -> list[PredictionInput]:
        """Pairs of a ``path1,path2`` CSV or of a folder with two sub-folders, else of consecutive rows of a
        CSV (``options.path_column``, default ``path``: the competition's pairs file)."""
        if Path(source).is_dir() or (Path(source).suffix.lower() == ".csv" and has_columns(source, ("path1", "path2"))):
            return read_image_pairs(source)
        return read_row_pairs(source, options.get("path_column", "path"))

    def _landmarks(self, root: Path) -> dict[Path, np.ndarray] | None:
        if not self.cutout:
            return None
        path = self.landmarks_csv or root / "landmarks.csv"
        return read_landmarks_csv(require_path(path, "data.landmarks_csv", "landmarks CSV"))

    def build_datasets(self) -> dict[str, Dataset]:
        root = self.data_root()
        records, presplit = read_verification_splits(root, self.skip_bad_files)
        self.num_identities = max(r.identity_index for r in records) + 1
        keys = [relative_key(r.path, root) for r in records]
        # Pre-split folders may reuse a name for different people: their identity index tells them apart.
        groups = [r.identity for r in records] if presplit is None else [r.identity_index for r in records]
        indices = self.splitter.choose(keys, groups, presplit=presplit, what="identities")
        self.val_has_fakes = any(records[i].is_fake for i in indices["val"])
        datasets = {}
        for split, chosen in indices.items():
            subset = [records[i] for i in chosen]
            images = self._decoded(subset, cutout=split == "train" and bool(self.cutout))
            if split == "train":
                datasets[split] = VerificationDataset(subset, self.train_transform(), self._landmarks(root), images)
            else:
                datasets[split] = VerificationDataset(subset, self.eval_transform(), images=images)
        return datasets

    def _decoded(self, records: list, cutout: bool) -> CachedImages | None:
        """The images decoded once (``data.cache``): resized to ``image_size``, or at their own size for
        the face-part cutout (its landmarks are in the stored image's pixels)."""
        size = (self.image_size, self.image_size)
        prepare, signature = (None, "native") if cutout else (A.Compose([A.Resize(*size)]), f"resize{size[0]}x{size[1]}")
        images = self.decoded([(r.path, None) for r in records], prepare, signature, None if cutout else size)
        if images is not None and images.unreadable():
            load_image(records[images.unreadable()[0]].path)  # raises the reader's own error naming the file
        return images

    def train_sampler(self, dataset: VerificationDataset) -> PKBatchSampler:
        rank, world_size = self._distributed()
        k = self.images_per_identity
        return PKBatchSampler([r.identity_index for r in dataset.records], p=self.batch_size // k, k=k,
                              seed=self.seed, rank=rank, world_size=world_size, passes=self.passes)

    @property
    def info(self) -> DataInfo:
        return DataInfo("verification", ["different", "same"], (3, self.image_size, self.image_size), self.mean,
                        self.std, num_identities=self.num_identities, metric="cosine",
                        val_has_fakes=self.val_has_fakes)
