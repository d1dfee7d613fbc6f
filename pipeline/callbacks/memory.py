"""What a training process does with its memory: Python's cycle collector kept off the objects that live as long
as the training (``FrozenSetup``), and on a CPU, the C allocator made to keep what each step frees for the next
(``HeapReuse``)."""

from __future__ import annotations

import ctypes
import gc
import logging

import lightning.pytorch as pl

log = logging.getLogger(__name__)

# glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3


class FrozenSetup(pl.Callback):
    """When training starts, move every object alive then (modules, libraries, the data's index, the config) out
    of the collector's reach (``gc.freeze``); when it ends, give them back (garbage among them is collected then).

    A full collection walks every object the process holds: with torch, Lightning, matplotlib and the data
    loaded, 0.3-0.4 s each, a few times in a one-minute run, while what training allocates after its start is
    short-lived and still collected as before (CPython's docs on ``gc.freeze``). No collection before freezing:
    that alone costs what it would save."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        gc.freeze()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        gc.unfreeze()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        gc.unfreeze()


class HeapReuse(pl.Callback):
    """On a CPU training, glibc's ``malloc`` keeps the memory a training step frees and gives it to the next step,
    instead of returning it to the system and asking for it again.

    By default glibc serves every allocation over a threshold (128 KiB, raised as blocks are freed, to 32 MiB at
    most) with a fresh ``mmap`` and returns it with ``munmap`` when freed, and it gives the top of its heap back
    once more than twice that is free. A training step allocates and frees the same activations and gradients
    every time, so each step starts by page-faulting them in again, the kernel zeroing every 4 KiB page: about
    10,000 faults per step for resnet18 on 96 px batches of 32, and 5-8% of the step on a 2-core CPU (measured:
    docs/scaling.md). ``mallopt`` raising both thresholds (``mmap_threshold_mb``, ``trim_threshold_mb``) makes
    the heap serve them; the process then keeps the training's peak memory until it ends, as jemalloc or
    tcmalloc set up for training do (Intel's CPU tuning guide for PyTorch). Set when fitting starts, for the rest
    of the process (data loader workers, started later, inherit it); nothing on a GPU training (its tensors are
    not on this heap) or where the C library is not glibc. ``callbacks.heap_reuse=null`` leaves the defaults.
    """

    def __init__(self, mmap_threshold_mb: int = 1024, trim_threshold_mb: int = 4096) -> None:
        self.thresholds = {M_MMAP_THRESHOLD: mmap_threshold_mb << 20, M_TRIM_THRESHOLD: trim_threshold_mb << 20}
        self.applied = False

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.strategy.root_device.type == "cpu":
            self.applied = set_malloc_thresholds(self.thresholds)


def set_malloc_thresholds(values: dict[int, int]) -> bool:
    """``mallopt(parameter, value)`` for each of ``values`` in this process; False where the C library is not glibc
    (musl's ``mallopt`` does nothing; macOS has none) or refuses a value."""
    try:
        libc = ctypes.CDLL(None)  # the symbols already loaded into this process: its C library's
        libc.gnu_get_libc_version  # noqa: B018 (glibc only)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        log.debug("heap_reuse: no glibc here; the allocator keeps its defaults")
        return False
    return all(mallopt(parameter, value) == 1 for parameter, value in values.items())
