"""Decode once: every split's images decoded (and cropped, resized: the deterministic preprocessing)
a single time into one memory-mapped file, read back by every later epoch, worker and run.

A cache entry is a folder named after a hash of the files (path, size, mtime), their crop boxes and
the preprocessing signature, so a changed file or another image size makes a new entry. It holds
``images.u8`` (the images' bytes one after the other) and ``index.npy`` (offset, height, width per
item; 0 x 0 for a file that does not decode). Building decodes on every core and takes a file lock:
under DDP one process per machine decodes, the others wait and map the same file. Workers open the
map lazily, so nothing is copied per worker.

``data.cache``: ``disk`` (``data.decoded_dir``, kept across runs), ``memory`` (``/dev/shm``: RAM shared by
the machine's processes, kept until reboot, no disk writes), ``none`` (decode every item every
epoch), ``auto`` (the default: ``disk`` when the decoded images take under half the free space
there, else ``none``; ``none`` too without a ``decoded_dir``). An explicit ``disk`` or ``memory``
that would take more than half the free space stops with one line. See docs/data_cache.md.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from filelock import FileLock
from torch.utils.data import DataLoader, Dataset

from pipeline.data.io import load_image
from pipeline.utils.errors import UserError

log = logging.getLogger(__name__)

MODES = ("auto", "none", "memory", "disk")
FORMAT_VERSION = 1
SHARED_MEMORY = Path("/dev/shm")
# Decoded RGB bytes per encoded byte when the output size is unknown (native-size caches): JPEG
# photos shrink about 10:1, so this errs on the large side.
EXPANSION = 12

Box = tuple[int, int, int, int] | None
Prepare = A.Compose


class Decoder(Dataset):
    """Item ``i``: file ``i`` decoded, cropped to its box and passed through ``prepare``; an unreadable
    file gives a 0 x 0 image (the datamodule decides whether that is an error)."""

    def __init__(self, sources: Sequence[tuple[Path, Box]], prepare: Prepare | None) -> None:
        self.sources = list(sources)
        self.prepare = prepare

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, index: int) -> np.ndarray:
        path, box = self.sources[index]
        try:
            return decode(path, box, self.prepare)
        except UserError:
            return np.zeros((0, 0, 3), np.uint8)


def decode(path: Path, box: Box, prepare: Prepare | None) -> np.ndarray:
    """The deterministic part of preprocessing: read, crop to ``box``, ``prepare`` (resize, eye zone)."""
    image = load_image(path)
    if box is not None:
        x0, y0, x1, y1 = box
        image = image[y0:y1, x0:x1]
    return np.ascontiguousarray(prepare(image=image)["image"] if prepare is not None else image)


class CachedImages:
    """The decoded images of one cache entry; item ``i`` is a fresh (writable) uint8 HxWx3 array."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.index = np.load(folder / "index.npy")
        self._data: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_data": None}  # each worker maps the file itself

    def __getitem__(self, index: int) -> np.ndarray:
        offset, height, width = (int(v) for v in self.index[index])
        if not height:
            return np.zeros((0, 0, 3), np.uint8)
        if self._data is None:
            self._data = np.memmap(self.folder / "images.u8", dtype=np.uint8, mode="r")
        return np.array(self._data[offset : offset + height * width * 3]).reshape(height, width, 3)

    def subset(self, keep: Sequence[int]) -> CachedImages:
        """The images at positions ``keep``, in that order."""
        chosen = copy.copy(self)
        chosen.index = self.index[list(keep)]
        return chosen

    def unreadable(self) -> list[int]:
        """Items whose file did not decode."""
        return [int(i) for i in np.flatnonzero(self.index[:, 1] == 0)]


def cache_key(sources: Sequence[tuple[Path, Box]], signature: str) -> str:
    """Hash of the files (path, size, mtime), their boxes and the preprocessing ``signature``."""
    entries = []
    for path, box in sources:
        try:
            stat = Path(path).stat()
        except OSError as exc:
            raise UserError(f"{path}: cannot read image file ({exc.strerror or exc})") from None
        entries.append([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns, list(box) if box else None])
    payload = json.dumps([FORMAT_VERSION, signature, entries]).encode()
    return hashlib.sha256(payload).hexdigest()[:24]


def cache_folder(mode: str, decoded_dir: str | Path | None) -> Path | None:
    """Where ``mode`` keeps its entries, or None when images are decoded every time."""
    if mode not in MODES:
        raise UserError(f"data.cache: '{mode}' is not one of {', '.join(MODES)}")
    if mode == "none" or (mode == "auto" and decoded_dir is None):
        return None
    if mode == "memory":
        return (SHARED_MEMORY if SHARED_MEMORY.is_dir() else Path(tempfile.gettempdir())) / "pipeline-decoded"
    if decoded_dir is None:
        raise UserError(f"data.decoded_dir: needed for data.cache={mode} (a folder for the decoded images)")
    return Path(decoded_dir)


def fits(folder: Path, estimate: int) -> str | None:
    """None when ``estimate`` bytes take under half the free space where ``folder`` is, else why not."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if estimate <= free // 2:
        return None
    return f"the decoded images (~{estimate / 1e9:.1f} GB) would take over half the free space of {existing} ({free / 1e9:.1f} GB)"


def estimate_bytes(sources: Sequence[tuple[Path, Box]], size: Sequence[int] | None) -> int:
    """Decoded size: exact for a fixed output ``size`` (height, width), else from the file sizes."""
    if size is not None:
        return len(sources) * int(size[0]) * int(size[1]) * 3
    return EXPANSION * sum(Path(path).stat().st_size for path, _ in sources)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity, which containers and ``taskset`` narrow)."""
    return len(os.sched_getaffinity(0))


def build_workers() -> int:
    """Decoding processes for a build: every core this process may use (it only writes), at most 8."""
    return min(8, usable_cores())


def open_cache(folder: Path, sources: Sequence[tuple[Path, Box]], prepare: Prepare | None, signature: str,
               size: Sequence[int] | None, mode: str) -> CachedImages | None:
    """The cache entry of ``sources``, built unless it exists; None when ``mode`` is ``auto`` and it
    would not fit (an explicit mode that would not fit is a UserError)."""
    entry = folder / cache_key(sources, signature)
    if not (entry / "index.npy").is_file():
        problem = fits(folder, estimate_bytes(sources, size))
        if problem and mode == "auto":
            log.info("data.cache=auto: %s; decoding every epoch", problem)
            return None
        if problem:
            raise UserError(f"data.cache={mode}: {problem}; free some, set data.decoded_dir elsewhere or data.cache=none")
        folder.mkdir(parents=True, exist_ok=True)
        with FileLock(str(entry) + ".lock"):
            if not (entry / "index.npy").is_file():
                build(entry, Decoder(sources, prepare), build_workers())
    return CachedImages(entry)


def _identity(item):
    return item


def build(entry: Path, decoder: Decoder, num_workers: int) -> None:
    """Decode every item with ``num_workers`` processes into a temporary folder, then move it into place
    in one step."""
    log.info("decoding %d images once into %s", len(decoder), entry)
    scratch = Path(tempfile.mkdtemp(prefix=entry.name + ".", dir=entry.parent))
    index = np.zeros((len(decoder), 3), np.int64)
    offset = 0
    # A private generator for the workers' base seed: drawing it from the global one would make a run that
    # builds the cache initialise its model differently from the same run reading the cache.
    loader = DataLoader(decoder, batch_size=None, num_workers=num_workers, collate_fn=_identity, generator=torch.Generator())
    try:
        with (scratch / "images.u8").open("wb") as out:
            for i, image in enumerate(loader):
                out.write(image.tobytes())
                index[i] = (offset, image.shape[0], image.shape[1])
                offset += image.size
        np.save(scratch / "index.npy", index)
        os.replace(scratch, entry)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
