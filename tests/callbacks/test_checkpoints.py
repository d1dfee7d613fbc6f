"""Checkpoints: last.ckpt is always the newest epoch, linked to the top-k file when the epoch saved one."""

from __future__ import annotations

import os
import sys

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from pipeline.callbacks.model_selection import Checkpoints
from pipeline.utils.errors import UserError

SCORES = [0.5, 0.7, 0.6, 0.8, 0.4]  # improves at epochs 0, 1 and 3


class Scripted(BoringModel):
    def on_validation_epoch_end(self) -> None:
        self.log("score", SCORES[self.current_epoch])


class Record(pl.Callback):
    """What checkpoints/ holds after each epoch's checkpoint callback has run (read when the next epoch
    starts and when fitting ends: Lightning runs checkpoint callbacks after all others)."""

    def __init__(self, folder) -> None:
        self.folder = folder
        self.seen: list[tuple[str | None, int]] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch:
            self.look()

    def on_fit_end(self, trainer, pl_module) -> None:
        self.look()

    def look(self) -> None:
        last = self.folder / "last.ckpt"
        target = os.readlink(last) if last.is_symlink() else None
        self.seen.append((target, torch.load(last, weights_only=True)["epoch"]))


def test_last_is_the_newest_epoch_and_a_link_when_the_epoch_improved(tmp_path):
    folder = tmp_path / "checkpoints"
    checkpoints = Checkpoints(dirpath=folder, filename="epoch{epoch:03d}", monitor="score", mode="max", save_top_k=1,
                              save_last="link", auto_insert_metric_name=False)
    record = Record(folder)
    trainer = pl.Trainer(max_epochs=len(SCORES), limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0,
                         callbacks=[checkpoints, record], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(Scripted())
    # Improving epochs link last.ckpt to their own file; the others write it in full (Lightning alone
    # would leave it at the best epoch).
    assert record.seen == [("epoch000.ckpt", 0), ("epoch001.ckpt", 1), (None, 2), ("epoch003.ckpt", 3), (None, 4)]
    assert sorted(p.name for p in folder.iterdir()) == ["epoch003.ckpt", "last.ckpt"]
    assert checkpoints.best_model_path == str(folder / "epoch003.ckpt")


def test_a_failed_background_write_leaves_last_ckpt_whole(tmp_path, monkeypatch):
    """With the background writer (configs/trainer/default.yaml), epoch 3's file fails to write after training
    moved on: last.ckpt is never linked to it, and the previous best file is not removed for it."""
    import errno
    import time

    from lightning.pytorch.plugins.io import AsyncCheckpointIO

    from pipeline.callbacks.model_selection import AtomicCheckpointIO

    save = torch.save

    def full_at_epoch_3(obj, path, *args, **kwargs):
        if obj.get("epoch") == 3:
            time.sleep(0.5)
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_at_epoch_3)
    folder = tmp_path / "checkpoints"
    checkpoints = Checkpoints(dirpath=folder, filename="epoch{epoch:03d}", monitor="score", mode="max", save_top_k=1,
                              save_last="link", auto_insert_metric_name=False)
    trainer = pl.Trainer(max_epochs=len(SCORES), limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0,
                         callbacks=[checkpoints], logger=False, enable_progress_bar=False, enable_model_summary=False,
                         accelerator="cpu", plugins=[AsyncCheckpointIO(AtomicCheckpointIO())])
    try:
        trainer.fit(Scripted())
    except Exception as exc:  # noqa: BLE001 -- the disk error, raised at the next save or at teardown
        assert "no space left" in str(exc).lower(), exc
    else:
        raise AssertionError("the failed write was not reported")
    # Epoch 3's file never written, nothing links to it, and epoch 1's (the best one written) is kept; epoch 4, queued
    # behind the failure, wrote last.ckpt in full.
    assert sorted(p.name for p in folder.iterdir()) == ["epoch001.ckpt", "last.ckpt"]
    assert not (folder / "last.ckpt").is_symlink() and torch.load(folder / "last.ckpt", weights_only=True)["epoch"] == 4


def test_runs_saved_with_the_old_checkpoint_writer_name_still_find_it():
    """Run folders saved before the move name ``pipeline.utils.files.AtomicCheckpointIO`` in ``trainer.plugins``;
    Hydra locates it as it does for a resume (``bin/runs.py`` no longer imports torch through utils/files)."""
    from hydra.utils import get_class

    from pipeline.callbacks.model_selection import AtomicCheckpointIO

    assert get_class("pipeline.utils.files.AtomicCheckpointIO") is AtomicCheckpointIO


def test_last_interval_leaves_last_at_the_newest_written_epoch_until_training_ends(tmp_path):
    folder = tmp_path / "checkpoints"
    checkpoints = Checkpoints(dirpath=folder, filename="epoch{epoch:03d}", monitor="score", mode="max", save_top_k=1,
                              save_last="link", auto_insert_metric_name=False, last_interval_s=3600)
    record = Record(folder)
    trainer = pl.Trainer(max_epochs=len(SCORES), limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0,
                         callbacks=[checkpoints, record], logger=False, enable_progress_bar=False,
                         enable_model_summary=False, accelerator="cpu")
    trainer.fit(Scripted())
    # Epoch 2 does not improve and the interval has not passed: last.ckpt still links to epoch 1's file; the
    # improving epoch 3 writes (and links) at once; the final epoch 4 is written when training ends.
    assert record.seen == [("epoch000.ckpt", 0), ("epoch001.ckpt", 1), ("epoch001.ckpt", 1), ("epoch003.ckpt", 3), (None, 4)]
    assert sorted(p.name for p in folder.iterdir()) == ["epoch003.ckpt", "last.ckpt"]
    resumed = torch.load(folder / "last.ckpt", weights_only=True)
    assert resumed["epoch"] == 4 and resumed["global_step"] == trainer.global_step


def test_last_interval_counts_the_time_the_process_ran_not_its_pauses(monkeypatch):
    """``last.ckpt``'s interval is on the process's own clock: 90 s paused for others (an interleaved benchmark side)
    plus 30 s of training is 30 s, not due with a 60 s interval; 60 s of its own is."""
    from types import SimpleNamespace

    from pipeline.utils import clock

    now = [1000.0]
    monkeypatch.setattr("pipeline.utils.clock.time.perf_counter", lambda: now[0])
    monkeypatch.setattr("pipeline.utils.clock._paused_s", 0.0)
    checkpoints = Checkpoints(dirpath="x", last_interval_s=60)
    trainer = SimpleNamespace(should_stop=False, max_epochs=100, max_steps=-1, current_epoch=3, global_step=30,
                              world_size=1)
    checkpoints._written_at = clock.now()
    now[0] += 90.0
    clock.pause(90.0)
    now[0] += 30.0
    assert not checkpoints._last_due(trainer)
    now[0] += 30.0
    assert checkpoints._last_due(trainer)


def test_last_interval_must_be_seconds():
    with pytest.raises(UserError, match="last_interval_s"):
        Checkpoints(dirpath="x", last_interval_s=-1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's own nice value is Linux's")
def test_checkpoint_writes_run_at_the_lowest_priority_off_the_main_thread_only(tmp_path):
    import threading

    from pipeline.callbacks.model_selection import AtomicCheckpointIO

    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    seen = {}

    def write() -> None:
        AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(3)}, tmp_path / "a.ckpt")
        seen["writer"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    thread = threading.Thread(target=write)
    thread.start()
    thread.join()
    assert seen["writer"] == 19
    AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(3)}, tmp_path / "b.ckpt")  # from the main thread
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before
    assert torch.load(tmp_path / "a.ckpt")["w"].shape == (3,) and (tmp_path / "b.ckpt").is_file()


def test_checkpoints_are_written_through_a_file_object_and_read_back_whole(tmp_path, monkeypatch):
    """Given a path, ``torch.save``'s C++ writer keeps the GIL while it writes each tensor (the training thread
    stalls); given a Python file object it lets go at every write. The file is still replaced whole."""
    import io

    from pipeline.callbacks import model_selection

    targets = []
    real_save = torch.save

    def spy(obj, f, *args, **kwargs):
        targets.append(f)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(model_selection.torch, "save", spy)
    state = {"w": torch.arange(100_000, dtype=torch.float32), "epoch": 3}
    (tmp_path / "a.ckpt").write_bytes(b"the previous checkpoint")
    model_selection.AtomicCheckpointIO().save_checkpoint(state, tmp_path / "a.ckpt")
    assert len(targets) == 1 and isinstance(targets[0], io.BufferedWriter)
    loaded = torch.load(tmp_path / "a.ckpt")
    assert loaded["epoch"] == 3 and torch.equal(loaded["w"], state["w"])
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]  # no staging file left
