"""Base LightningDataModule: seeded loaders, split bookkeeping and the task's data description."""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from pipeline.data.cache import Box, CachedImages, Prepare, cache_folder, open_cache, usable_cores
from pipeline.data.prediction_inputs import PredictionDataset, PredictionInput, read_images
from pipeline.data.samplers.epoch_seeded import EpochSeededSampler
from pipeline.data.samplers.eval_shard import eval_batches
from pipeline.data.splits import SplitChooser
from pipeline.utils.contracts import DataInfo
from pipeline.utils.errors import UserError

log = logging.getLogger(__name__)


def to_plain(value: Any) -> Any:
    """Config nodes (DictConfig, ListConfig) as plain containers; anything else unchanged."""
    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig | ListConfig) else value


def auto_workers() -> int:
    """Loader processes for ``num_workers: auto``: the cores this process may use, one left for the
    training loop, at most 8; none on 2 cores or fewer, where the loop's threads use every core and
    a worker could only take turns with them (items come from the decode-once cache, so the main
    process prepares them in about 1% of a step)."""
    cores = usable_cores()
    return 0 if cores <= 2 else min(8, cores - 1)


MASK64 = (1 << 64) - 1


def mix64(value: int) -> int:
    """SplitMix64's finaliser: a well-spread 64-bit hash of ``value`` (consecutive inputs give unrelated outputs)."""
    value = (value + 0x9E3779B97F4A7C15) & MASK64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & MASK64
    return value ^ (value >> 31)


class EpochSeededDataset(Dataset):
    """``dataset`` with each item's random augmentation seeded from ``(seed, epoch, index)``.

    Persistent workers keep their random state from one epoch to the next, so what an item's
    augmentation draws would depend on the history of the worker that happens to load it (and a
    resumed run, whose workers are new, would differ). ``epoch`` is a shared-memory tensor that the
    loader sets before each epoch; the workers read it. Inside a worker the global RNGs are seeded
    too (datasets drawing from them); in the main process only the dataset's own ``transform``.

    The transform draws from one numpy generator and one ``random.Random`` (shared by the Compose and its
    transforms, so a flip and a colour change with the same p do not always come together), handed to it
    once and reseeded for each item from a SplitMix64 hash of ``(seed, epoch, index)``: 8 us an item, where
    a new ``default_rng([seed, epoch, index])`` and ``set_random_state`` took 45 (1.2 ms of a 32-item batch).
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = seed
        self.epoch = torch.zeros(1, dtype=torch.int64).share_memory_()
        self.collate_fn = getattr(dataset, "collate_fn", None)
        self.bits = np.random.PCG64(seed)
        self.generator, self.py_random = np.random.Generator(self.bits), random.Random(seed)
        self.epoch_seed = (-1, 0)  # (epoch, its hash)

    def __len__(self) -> int:
        return len(self.dataset)

    def item_seed(self, index: int) -> int:
        """The 64-bit seed of item ``index`` in the current epoch."""
        epoch = int(self.epoch[0])
        if self.epoch_seed[0] != epoch:
            self.epoch_seed = (epoch, mix64(mix64(self.seed & MASK64) ^ epoch))
        return mix64(self.epoch_seed[1] ^ index)

    def __getitem__(self, index: int):
        seed = self.item_seed(index)
        self.bits.state = {"bit_generator": "PCG64", "has_uint32": 0, "uinteger": 0,
                           "state": {"state": (seed << 64) | mix64(seed), "inc": (mix64(seed ^ 1) << 1) | 1}}
        self.py_random.seed(seed)
        if torch.utils.data.get_worker_info() is not None:
            seed32 = seed >> 32
            random.seed(seed32)
            np.random.seed(seed32)
            torch.manual_seed(seed32)
        transform = getattr(self.dataset, "transform", None)
        transform = getattr(transform, "augment", transform)  # DetectionTransform holds its Compose there
        if hasattr(transform, "set_random_state") and getattr(transform, "random_generator", None) is not self.generator:
            transform.set_random_state(self.generator, self.py_random)
        return self.dataset[index]


class EpochSeededLoader(DataLoader):
    """A training DataLoader whose items depend only on ``(seed, epoch, index)``.

    PyTorch draws each iterator's base seed (from which worker seeds follow) from the global RNG,
    and Lightning creates the first epoch's iterator at a different point than later ones. Drawing it
    from a generator reset to ``seed + epoch`` at every ``iter()`` leaves the global RNG (dropout)
    untouched; :class:`EpochSeededDataset` seeds each item, so persistent workers and a resumed run
    see exactly the items of an uninterrupted one.
    """

    def __init__(self, dataset: Dataset, *args, seed: int = 0, **kwargs) -> None:
        kwargs.setdefault("generator", torch.Generator())
        super().__init__(EpochSeededDataset(dataset, seed), *args, **kwargs)
        self.seed = seed

    def _epoch(self) -> int:
        source = self.batch_sampler if hasattr(self.batch_sampler, "set_epoch") else self.sampler
        return int(getattr(source, "epoch", 0))

    def __iter__(self):
        self.generator.manual_seed(self.seed + self._epoch())
        self.dataset.epoch[0] = self._epoch()
        return super().__iter__()


def pinned(pin_memory: bool | str, trainer: pl.Trainer | None) -> bool:
    """``data.pin_memory``; ``auto``: pinned host memory when the trainer trains on a GPU."""
    if pin_memory != "auto":
        return bool(pin_memory)
    device = getattr(getattr(trainer, "strategy", None), "root_device", None)
    return device is not None and device.type == "cuda"


class BaseDataModule(pl.LightningDataModule):
    """Subclasses implement ``build_datasets()`` (called by ``setup``) returning ``{"train": ds, "val": ds, "test": ds}``
    and ``info`` (class names, input size, normalisation: everything export and serve need).

    Datasets that split themselves ask ``self.splitter`` (``data.split`` fractions, ``data.split_file``,
    the run's ``split_out`` record); an empty test split is replaced by val, with a warning.

    The training order comes from :class:`EpochSeededSampler` (seed + epoch), so a run resumed at
    an epoch boundary sees exactly the batches an uninterrupted run would have seen. Under DDP each
    process evaluates its own run of the val/test batches (``eval_batches``), every item once.
    ``data.sampler`` names one of the subclass's ``SAMPLERS`` (``random`` is the seeded shuffle).
    """

    SAMPLERS: tuple[str, ...] = ("random",)

    def __init__(
        self,
        batch_size: int = 64,
        num_workers: int | str = "auto",
        seed: int = 42,
        pin_memory: bool | str = "auto",
        persistent_workers: bool = True,
        prefetch_factor: int = 4,
        eval_batch_size: int | None = None,
        split: dict[str, float] | None = None,
        split_file: str | None = None,
        split_out: str | None = None,
        cache: str = "auto",
        decoded_dir: str | None = None,
        sampler: str = "random",
    ) -> None:
        super().__init__()
        if sampler not in self.SAMPLERS:
            raise UserError(f"data.sampler: '{sampler}' is not one of {', '.join(self.SAMPLERS)}")
        self.sampler = sampler
        self.splitter = SplitChooser(to_plain(split), seed, split_file, split_out)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        if num_workers != "auto" and not (isinstance(num_workers, int) and num_workers >= 0):
            raise UserError(f"data.num_workers: '{num_workers}' is neither 'auto' nor a count >= 0")
        self.num_workers = auto_workers() if num_workers == "auto" else num_workers
        self.seed = seed
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and self.num_workers > 0
        self.prefetch_factor = prefetch_factor
        self.cache = cache
        self.decoded_dir = decoded_dir
        self.datasets: dict[str, Dataset] = {}

    @property
    def info(self) -> DataInfo:
        """Description of the data for the model, export and serving (class names, input size, ...)."""
        raise NotImplementedError

    def preprocess(self, image: np.ndarray) -> torch.Tensor | None:
        """THE eval preprocessing of one RGB uint8 image -> CHW float tensor, shared by test, predict,
        export checks and serve; None when the image cannot be used (e.g. no face found)."""
        raise NotImplementedError(f"{type(self).__name__} has no single-image preprocessing")

    # --- prediction: bin/predict.py's input, read as this data's task takes it ----------------------
    def predict_items(self, source: Path, options: dict[str, Any]) -> list[PredictionInput]:
        """What ``input=`` names: single images (``read_images``); override for pairs and their options."""
        return read_images(source)

    def predict_item(self, image: np.ndarray) -> dict[str, Any]:
        """One RGB image's model input ``image`` (None: unusable) and what maps answers back (e.g. a letterbox)."""
        return {"image": self.preprocess(image)}

    def predict_on(self, source: Path, options: dict[str, Any], input_size: Sequence[int]) -> None:
        """Make ``predict_dataloader`` read ``source`` (``options.batch_size`` items a batch), no split built."""
        items = self.predict_items(Path(source), options)
        self.datasets["predict"] = PredictionDataset(items, self.predict_item, input_size)
        self.eval_batch_size = int(options.get("batch_size", self.eval_batch_size))

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            self.datasets = self.build_datasets()
            if "val" in self.datasets and not len(self.datasets.get("test", ())):
                log.warning("no test split: test metrics are computed on the val split")
                self.datasets["test"] = self.datasets["val"]

    def decoded(self, sources: Sequence[tuple[Path, Box]], prepare: Prepare | None, signature: str,
                size: Sequence[int] | None = None) -> CachedImages | None:
        """The images of ``sources`` decoded once (``data.cache``), or None to decode on every read.

        ``prepare`` is the deterministic preprocessing after the crop to each box (a resize, an eye
        zone); ``signature`` names it and its parameters (part of the cache key); ``size`` is its
        output size (height, width) when fixed. Built by one process per machine, decoding on every core.
        """
        folder = cache_folder(self.cache, self.decoded_dir)
        if folder is None or not sources:
            return None
        return open_cache(folder, sources, prepare, signature, size, self.cache)

    def _distributed(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def train_sampler(self, dataset: Dataset):
        """The training sampler; override for weighted or P x K sampling."""
        rank, world_size = self._distributed()
        return EpochSeededSampler(len(dataset), self.seed, rank=rank, world_size=world_size)

    def _loader(self, split: str, train: bool) -> DataLoader:
        dataset = self.datasets[split]
        options = dict(
            num_workers=self.num_workers,
            pin_memory=pinned(self.pin_memory, getattr(self, "trainer", None)),
            persistent_workers=self.persistent_workers,
            collate_fn=getattr(dataset, "collate_fn", None),
            prefetch_factor=self.prefetch_factor if self.num_workers else None,
        )
        if not train:  # this process's share of the batches (all of them in one process; see ``eval_batches``)
            rank, world_size = self._distributed()
            if 0 < len(dataset) < world_size:
                raise UserError(f"data: the {split} split has {len(dataset)} item(s), fewer than the {world_size} processes "
                                "that evaluate it; use a larger split or fewer trainer.devices")
            return DataLoader(dataset, batch_sampler=eval_batches(len(dataset), self.eval_batch_size, rank, world_size),
                              **options)
        sampler = self.train_sampler(dataset)
        trainer = getattr(self, "trainer", None)
        if trainer is not None and hasattr(sampler, "set_epoch"):
            # Lightning builds the first epoch's iterator (and worker prefetching reads the sampler)
            # before it calls set_epoch; start from the epoch it is about to pass, as a resumed run must.
            sampler.set_epoch(trainer.fit_loop.epoch_progress.current.processed)
        if hasattr(sampler, "batch_size"):
            return EpochSeededLoader(dataset, batch_sampler=sampler, seed=self.seed, **options)
        return EpochSeededLoader(dataset, batch_size=self.batch_size, sampler=sampler, seed=self.seed,
                                 drop_last=len(dataset) > self.batch_size, **options)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        """The items of ``predict_on`` in order (a plain batch size: Lightning's prediction tracks batch indices)."""
        dataset = self.datasets["predict"]
        return DataLoader(dataset, batch_size=self.eval_batch_size, num_workers=self.num_workers,
                          pin_memory=pinned(self.pin_memory, getattr(self, "trainer", None)), collate_fn=dataset.collate_fn)

