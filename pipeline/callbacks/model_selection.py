"""Model selection that cannot silently fail: the monitored metric must exist and be finite."""

from __future__ import annotations

import logging
import math
import os
import threading
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.plugins.io import AsyncCheckpointIO

from pipeline.callbacks.metrics_history import scalar_metrics
from pipeline.utils import clock
from pipeline.utils.errors import UserError
from pipeline.utils.files import replacing

log = logging.getLogger(__name__)


def _state(value: float | None) -> str:
    """``NaN`` (null), ``infinite`` or ``ok``: whether a logged value can rank epochs."""
    if value is None or math.isnan(value):
        return "NaN"
    return "infinite" if math.isinf(value) else "ok"


class MonitorGuard(pl.Callback):
    """After every validation epoch, checks that ``monitor`` (``task.monitor``) was logged and is finite.

    Otherwise the checkpoint callback would never rank epochs and keep the first one as "best". When
    ``fallback`` is finite instead (verification without fakes: ``val/eer_mean`` is NaN, ``val/eer_real``
    is not), the checkpoint and early-stopping callbacks switch to it, with a log line saying so; with
    neither, the run stops with one line naming ``task.monitor`` and the metrics that were logged.
    Lightning runs checkpoint callbacks after all others, so the switch happens before any ranking.
    """

    def __init__(self, monitor: str, fallback: str | None = None) -> None:
        self.monitor = monitor
        self.fallback = fallback

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self.monitor:
            return
        metrics = scalar_metrics(trainer.callback_metrics)
        state = _state(metrics[self.monitor]) if self.monitor in metrics else "missing"
        if state == "ok":
            return
        if self.fallback and self.fallback in metrics and _state(metrics[self.fallback]) == "ok":
            log.warning("task.monitor: %s is %s (e.g. val has no fakes); model selection uses %s instead",
                        self.monitor, state, self.fallback)
            self._switch(trainer, self.fallback)
            return
        logged = ", ".join(sorted(k for k, v in metrics.items() if _state(v) == "ok")) or "none"
        raise UserError(
            f"task.monitor: '{self.monitor}' is {state} after validation epoch {trainer.current_epoch}, so no "
            f"checkpoint can be ranked; set task.monitor to a finite metric (logged: {logged})"
        )

    def _switch(self, trainer: pl.Trainer, monitor: str) -> None:
        for callback in trainer.callbacks:
            if isinstance(callback, ModelCheckpoint | EarlyStopping) and callback.monitor == self.monitor:
                callback.monitor = monitor
        self.monitor = monitor


class Checkpoints(ModelCheckpoint):
    """Lightning's ``ModelCheckpoint`` with ``last.ckpt`` always the newest epoch, written once, never dangling.

    Lightning 2.6 refreshes ``last.ckpt`` only at epochs that also save a top-k checkpoint (or, with
    ``save_last: link``, links it to the newest top-k file even when that is an older epoch), so a
    run whose final epochs do not improve would resume from its best epoch, not its last. Here, with
    ``save_last: link``, an epoch that saves a top-k file links ``last.ckpt`` to it (one write, not
    two) and any other epoch writes ``last.ckpt`` itself.

    ``last_interval_s``: an epoch that saves no top-k file writes ``last.ckpt`` only when this many seconds
    passed since this process last wrote a checkpoint (0: at every epoch), and training's end always
    brings it to the final epoch. Written at every epoch, a resnet18 with AdamW (135 MB a checkpoint) on 4 s
    epochs writes 2 GB in a minute; with an interval, a crash loses at most that many seconds of training,
    and a resume from the older ``last.ckpt`` redoes those epochs exactly.

    With ``AsyncCheckpointIO`` (configs/trainer/default.yaml) a file is written after training moved on, but
    Lightning links ``last.ckpt`` to it and removes the previous best at once: a failed write (a full disk) left
    a dangling link. Here both wait in the writer's queue behind the writes, and are dropped once one failed.
    """

    def __init__(self, *args: Any, last_interval_s: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(last_interval_s, bool) or not isinstance(last_interval_s, (int, float)) or not last_interval_s >= 0:
            raise UserError(f"callbacks.model_checkpoint.last_interval_s: '{last_interval_s}' is not a number of "
                            "seconds >= 0 (0 writes last.ckpt at every epoch)")
        self.last_interval_s = float(last_interval_s)
        self._written_at: float | None = None

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        self._written_at = clock.now()

    def _last_due(self, trainer: pl.Trainer) -> bool:
        """Whether an epoch without a top-k file writes ``last.ckpt`` now: rank 0's clock decides for every
        process (they all take part in a checkpoint's write)."""
        due = (self.last_interval_s <= 0 or self._written_at is None or last_epoch(trainer)
               or clock.now() - self._written_at >= self.last_interval_s)
        return bool(trainer.strategy.broadcast(due, src=0)) if trainer.world_size > 1 else due

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Bring ``last.ckpt`` to the final state when training stopped where ``last_epoch`` could not see it
        coming (``trainer.max_time``): the checkpoint then says the epoch after the last, as Lightning's own
        ``save_last`` at this point does."""
        super().on_train_end(trainer, pl_module)
        if self.save_last == "link" and self._last_checkpoint_saved and not self._should_skip_saving_checkpoint(trainer):
            self._write_last(trainer, self._monitor_candidates(trainer))

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        # Lightning saves last.ckpt at an epoch without a top-k file only once something was saved in this
        # process (``_last_checkpoint_saved``); a resumed run has its last.ckpt already.
        self._last_checkpoint_saved = self._last_checkpoint_saved or str(self.dirpath)

    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict) -> None:
        if self.save_last == "link" and self._last_global_step_saved != trainer.global_step:
            if self._last_due(trainer):  # else last.ckpt stays at an earlier epoch until due, or until training ends
                self._write_last(trainer, monitor_candidates)
        else:
            super()._save_last_checkpoint(trainer, monitor_candidates)

    def _write_last(self, trainer: pl.Trainer, monitor_candidates: dict) -> None:
        """Nothing saved at this step: write last.ckpt in full (``save_last: link`` would link an older file)."""
        self.save_last = True
        try:
            super()._save_last_checkpoint(trainer, monitor_candidates)
        finally:
            self.save_last = "link"

    def _link_checkpoint(self, trainer: pl.Trainer, filepath: str, linkpath: str) -> None:
        if trainer.is_global_zero and os.path.abspath(filepath) != os.path.abspath(linkpath):
            self._after_writes(trainer, lambda: _relink(filepath, linkpath))
        trainer.strategy.barrier()

    def _remove_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        self._after_writes(trainer, lambda: super(Checkpoints, self)._remove_checkpoint(trainer, filepath))

    @staticmethod
    def _after_writes(trainer: pl.Trainer, action) -> None:
        """``action`` once the checkpoints queued so far are written, if they all were (its error: as theirs)."""
        io = trainer.strategy.checkpoint_io
        if not isinstance(io, AsyncCheckpointIO):
            return action()

        def queued() -> None:
            if io._error is None:
                try:
                    action()
                except BaseException as exc:  # noqa: BLE001 -- raised by Lightning at the next save or at teardown
                    io._error = exc

        io._ensure_setup()
        io._executor.submit(queued)


def wait_for_writes(trainer: pl.Trainer) -> None:
    """Block until the checkpoints ``AsyncCheckpointIO`` has queued so far are written (its one writer thread runs
    them in order); nothing to wait for with a synchronous checkpoint IO."""
    io = trainer.strategy.checkpoint_io
    if isinstance(io, AsyncCheckpointIO) and io._executor is not None:
        io._executor.submit(lambda: None).result()


def last_epoch(trainer: pl.Trainer) -> bool:
    """Whether the epoch ending now is training's last: ``max_epochs`` or ``max_steps`` reached, or a callback
    (early stopping) asked to stop."""
    epochs, steps = trainer.max_epochs, trainer.max_steps
    return bool(trainer.should_stop or (epochs is not None and epochs >= 0 and trainer.current_epoch + 1 >= epochs)
                or (steps is not None and steps >= 0 and trainer.global_step >= steps))


def _relink(filepath: str, linkpath: str) -> None:
    """Make ``linkpath`` a relative symbolic link to ``filepath``, replacing what was there in one rename."""
    folder, name = os.path.split(linkpath)
    staging = os.path.join(folder, f".{name}.{os.getpid()}.link")
    if os.path.lexists(staging):
        os.remove(staging)
    os.symlink(os.path.relpath(filepath, folder), staging)
    os.replace(staging, linkpath)


def lowest_priority() -> None:
    """Give a background thread (not the main one) the lowest CPU priority: on Linux a thread has its own nice
    value. Elsewhere, or where it is not allowed, nothing.

    Training's two compute threads keep both cores of a small machine busy; a checkpoint's write (0.1-0.2 s of
    CPU for 135 MB) at normal priority takes a core from them, and the whole step waits for the thread that lost
    it: the first step after an improving epoch took 160-300 ms instead of 65. At the lowest priority the write
    runs when a core is free, and the steps keep their pace (measured: docs/scaling.md)."""
    if threading.current_thread() is threading.main_thread():
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, ``torch.save`` straight into a staging file that then replaces the
    checkpoint (``replacing``), instead of into an in-memory copy that is then written out: the same
    all-or-nothing file, without copying every byte twice (a resnet18 + AdamW checkpoint, 135 MB, took
    0.38 s that way against 0.13 s for ``torch.save`` itself). Remote paths (``s3://``...) keep Lightning's way.
    Written from ``AsyncCheckpointIO``'s thread, at the lowest CPU priority (``lowest_priority``), through a Python
    file object: given a path, ``torch.save``'s C++ writer holds the GIL while it writes each tensor, so the training
    thread, which needs the GIL between its operations, stalled for up to 35 ms at a time, 50-60 ms per 135 MB
    checkpoint; through a file object the GIL is let go at every write (stalls of at most 5 ms, the interpreter's
    switch interval) and the save takes as long (``tests/callbacks/test_checkpoints.py``, docs/scaling.md)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        lowest_priority()
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with replacing(path) as staging, open(staging, "wb") as out:
            torch.save(checkpoint, out)
