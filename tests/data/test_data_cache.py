"""Decode once: later setups and epochs decode nothing, a changed file is decoded again, augmentation
stays random per epoch, and a cached batch is the batch of the one eval preprocessing."""

from __future__ import annotations

import multiprocessing
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import pipeline.data.cache as image_cache
import pipeline.data.io as image_io
from pipeline.data.classification import ImageFolderDataModule
from pipeline.data.io import load_image
from pipeline.utils.errors import UserError

AUGMENT = [{"_target_": "albumentations.HorizontalFlip", "p": 0.5},
           {"_target_": "albumentations.RandomBrightnessContrast", "p": 1.0}]


def _write(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.random.default_rng(seed).integers(0, 256, (30 + seed % 7, 24, 3), dtype=np.uint8)
    cv2.imwrite(str(path), image)


@pytest.fixture
def folder(tmp_path) -> Path:
    for i in range(16):
        _write(tmp_path / "photos" / ("cat" if i % 2 else "dog") / f"{i}.png", i)
    return tmp_path / "photos"


@pytest.fixture(autouse=True)
def builds_in_process(monkeypatch) -> None:
    """Caches built in this process (quick, and its decodes can be counted); one test builds with workers."""
    monkeypatch.setattr(image_cache, "build_workers", lambda: 0)


@pytest.fixture
def decodes(monkeypatch) -> list[str]:
    """Every image decode (the builds and loaders here run in this process)."""
    calls: list[str] = []
    real = image_io.decode_image

    def counting(data: bytes, source: str = "<bytes>") -> np.ndarray:
        calls.append(source)
        return real(data, source)

    monkeypatch.setattr(image_io, "decode_image", counting)
    return calls


def _datamodule(root: Path, cache: str = "disk", augment=None, num_workers: int = 0, **kwargs) -> ImageFolderDataModule:
    dm = ImageFolderDataModule(root=str(root), decoded_dir=str(root.parent / "decoded"), cache=cache, image_size=(16, 12),
                               augment=augment, num_workers=num_workers, batch_size=4, seed=3,
                               split={"train": 0.5, "val": 0.25, "test": 0.25}, **kwargs)
    dm.setup("fit")
    return dm


def _epoch(loader, epoch: int) -> list[torch.Tensor]:
    loader.sampler.set_epoch(epoch)
    return [batch["image"] for batch in loader]


def test_second_setup_and_epochs_decode_no_image(folder, decodes):
    _datamodule(folder)
    assert sorted(decodes) == sorted(str(p) for p in folder.rglob("*.png")), "each image decoded exactly once"
    decodes.clear()
    dm = _datamodule(folder, augment=AUGMENT)
    for epoch in range(2):
        _epoch(dm.train_dataloader(), epoch)
    list(dm.val_dataloader())
    assert decodes == []


def test_a_changed_file_is_decoded_again(folder, decodes):
    _datamodule(folder)
    dm = _datamodule(folder)
    changed = dm.datasets["val"].samples[0].path
    _write(changed, 99)
    os.utime(changed, ns=(1, 1))  # another mtime even where the clock is coarse
    decodes.clear()
    dm = _datamodule(folder)
    assert str(changed) in decodes and len(decodes) == len(dm.datasets["val"])
    expected = dm.preprocess(load_image(changed))
    torch.testing.assert_close(dm.datasets["val"][0]["image"], expected, rtol=0, atol=0)


def test_cached_batch_equals_the_eval_preprocessing_of_each_file(folder):
    for cache in ("disk", "none"):
        dm = _datamodule(folder, cache=cache)
        (batch, *_) = list(dm.val_dataloader())
        samples = dm.datasets["val"].samples[: len(batch["image"])]
        expected = torch.stack([dm.preprocess(load_image(s.path)) for s in samples])
        torch.testing.assert_close(batch["image"], expected, rtol=0, atol=0, msg=cache)
        assert batch["label"].tolist() == [s.labels["label"] for s in samples]


def test_persistent_workers_augment_each_epoch_anew_and_replay_it_exactly(folder):
    dm = _datamodule(folder, augment=AUGMENT, num_workers=1)
    persistent = dm.train_dataloader()
    assert persistent.persistent_workers
    first, second = _epoch(persistent, 0), _epoch(persistent, 1)
    fresh = _datamodule(folder, augment=AUGMENT, num_workers=1).train_dataloader()
    resumed = _epoch(fresh, 1)  # a resumed run: new workers that start at epoch 1
    for a, b in zip(second, resumed, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not all(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    item = persistent.dataset
    item.epoch[0] = 0
    epoch0 = item[0]["image"]
    item.epoch[0] = 1
    assert not torch.equal(epoch0, item[0]["image"]), "the same item is augmented differently in another epoch"


def test_workers_build_the_same_cache_and_unreadable_files_are_named(folder, tmp_path, monkeypatch):
    monkeypatch.setattr(image_cache, "build_workers", lambda: 2)
    by_workers = _datamodule(folder)
    monkeypatch.setattr(image_cache, "build_workers", lambda: 0)
    in_process = ImageFolderDataModule(root=str(folder), decoded_dir=str(tmp_path / "other"), cache="disk",
                                       image_size=(16, 12), num_workers=0, seed=3,
                                       split={"train": 0.5, "val": 0.25, "test": 0.25})
    in_process.setup("fit")
    for split in ("train", "val", "test"):
        a, b = by_workers.datasets[split].images, in_process.datasets[split].images
        assert len(a) == len(b) and all(np.array_equal(a[i], b[i]) for i in range(len(a)))
    bad = folder / "cat" / "broken.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(UserError, match="broken.png"):
        _datamodule(folder, check_images=False)
    kept = _datamodule(folder, skip_bad_files=True)
    assert all(s.path != bad for ds in kept.datasets.values() for s in ds.samples)


def _open_counting(folder: Path, sources: list, counter: Path) -> None:
    real = image_io.decode_image

    def counting(data: bytes, source: str = "<bytes>") -> np.ndarray:
        with counter.open("a") as out:
            out.write(source + "\n")
        return real(data, source)

    image_io.decode_image = counting
    image_cache.open_cache(folder, sources, None, "native", None, "disk")


def test_processes_opening_the_cache_together_decode_once(folder, tmp_path):
    """DDP ranks on one machine: one builds under the lock, the other waits and maps the same entry."""
    sources = [(path, None) for path in sorted(folder.rglob("*.png"))]
    counter = tmp_path / "decodes.txt"
    context = multiprocessing.get_context("fork")
    ranks = [context.Process(target=_open_counting, args=(tmp_path / "decoded", sources, counter)) for _ in range(2)]
    for rank in ranks:
        rank.start()
    for rank in ranks:
        rank.join(timeout=60)
        assert rank.exitcode == 0
    assert sorted(counter.read_text().split()) == sorted(str(path) for path, _ in sources)
    (entry,) = [p for p in (tmp_path / "decoded").iterdir() if p.is_dir()]
    images = image_cache.CachedImages(entry)
    np.testing.assert_array_equal(images[3], load_image(sources[3][0]))


def test_a_cache_that_would_not_fit_is_skipped_by_auto_and_refused_when_asked_for(folder, monkeypatch):
    usage = shutil.disk_usage(folder)
    monkeypatch.setattr(image_cache.shutil, "disk_usage", lambda path: usage._replace(free=1000))
    dm = _datamodule(folder, cache="auto")
    assert all(ds.images is None for ds in dm.datasets.values())
    assert not (folder.parent / "decoded").exists()
    with pytest.raises(UserError, match=r"data.cache=disk: the decoded images .* free space"):
        _datamodule(folder, cache="disk")


def test_building_the_cache_leaves_the_random_state_as_reading_it_does(folder):
    """A run that decodes its cache must initialise its model as the same run reading that cache: the
    build draws nothing from the global generators."""
    states = []
    for _ in range(2):  # the first setup builds the entries, the second reads them
        torch.manual_seed(0)
        np.random.seed(0)
        _datamodule(folder)
        states.append((torch.get_rng_state(), np.random.get_state()[1].copy()))
    assert torch.equal(states[0][0], states[1][0])
    np.testing.assert_array_equal(states[0][1], states[1][1])
