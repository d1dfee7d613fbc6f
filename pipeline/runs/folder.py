"""Run folders: unique timestamped directories, one writer each, finding runs and their checkpoints."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pickle
import re
import socket
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from pipeline.runs.layout import RunLayout
from pipeline.runs.table import read_state
from pipeline.utils.config import CONFIG_DIR
from pipeline.utils.errors import UserError
from pipeline.utils.files import open_no_follow, read_json, refuse_links_out

log = logging.getLogger(__name__)
_announced: set[Path] = set()

RUN_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}(_\d+)?$")
def latest_run(experiment_dir: str | Path) -> Path:
    """The newest usable run under ``experiments_results/<experiment>``: finished or resumable (it has
    ``checkpoints/last.ckpt``), so not a run that failed before its first epoch ended nor a ``debug=fast`` one.
    The choice is printed once to stderr."""
    experiment_dir = Path(experiment_dir)
    runs = sorted(
        (p for p in experiment_dir.glob("*") if RUN_NAME.match(p.name) and RunLayout(p).is_run()),
        key=lambda p: (p.name.split("_")[0], p.name.split("_")[1], int(p.name.split("_")[2]) if p.name.count("_") > 1 else 0),
    )
    if not runs:
        raise UserError(f"no finished or started run found in '{experiment_dir}' (train one first with bin/train.py)")
    usable = [p for p in runs if RunLayout(p).last_ckpt.is_file()]
    if not usable:
        raise UserError(f"no usable run in '{experiment_dir}': its {len(runs)} run(s) have no checkpoints/last.ckpt (the "
                        f"newest: {read_state(runs[-1])}; failed before their first epoch ended, or debug=fast); "
                        "train one with bin/train.py or give run=<folder>")
    if usable[-1] not in _announced:
        _announced.add(usable[-1])
        saved = datetime.fromtimestamp(RunLayout(usable[-1]).last_ckpt.stat().st_mtime)
        skipped = [f"{p.name} ({read_state(p)})" for p in runs[runs.index(usable[-1]) + 1:]]
        print(f"latest run: {usable[-1]} ({read_state(usable[-1])}, last checkpoint {saved:%Y-%m-%d %H:%M})"
              + (f"; newer runs skipped: {', '.join(skipped)}" if skipped else ""), file=sys.stderr)
    return usable[-1]


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold ``<run>/.lock`` while this process writes the run: one writer per run folder.

    The file names its holder (``{"pid", "host", "since"}``) for the message a second writer gets; the lock
    itself is an ``flock`` on it, which the kernel releases when the holder dies, even by kill -9. So a lock
    file left behind is stale exactly when nobody holds its flock, with no guess from a PID that may have been
    reused (``filelock`` takes the same kind of lock but keeps no holder in the file; an O_EXCL file alone
    cannot tell a live holder from a dead one on another host). A stale lock is taken over with a log line.
    The lock file is opened with no-follow: a ``.lock`` that is a symbolic link is refused, its target untouched.
    """
    path = RunLayout(run_dir).lock
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(path)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # before closing: a process that opened it meanwhile sees a replaced file
        os.close(fd)


def _acquire(path: Path) -> int:
    """Open and flock ``path`` (not blocking), write this process into it and return its descriptor."""
    while True:
        fd = open_no_follow(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_json(path, {})
            raise UserError(f"run in progress (pid {holder.get('pid', '?')} on host {holder.get('host', '?')}): "
                            f"{path.parent}") from None
        if path.exists() and os.fstat(fd).st_ino == path.stat().st_ino:
            break
        os.close(fd)  # the holder removed the file between our open and flock: lock the new one
    stale = read_json(path, {})
    if stale:
        log.warning("Taking over the stale lock of %s (pid %s on host %s, not running)", path.parent,
                    stale.get("pid"), stale.get("host"))
    os.ftruncate(fd, 0)
    os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "since": datetime.now().isoformat(timespec="seconds")}).encode())
    return fd


def find_run(value: str | None, overrides: Sequence[str] = (), key: str = "run") -> Path:
    """The run folder ``value`` names (checked), or for ``latest``/None the newest usable run of the experiment
    that ``overrides`` select (``experiment=``, ``paths.*``; other overrides are not looked at); errors name ``key``."""
    if value in (None, "", "latest"):
        path = latest_run(experiment_folder(overrides))
    else:
        path = Path(value).expanduser().resolve()
        if not path.is_dir():
            raise UserError(f"{key}: folder '{path}' does not exist (give a run folder under experiments_results/)")
        if not RunLayout(path).is_run():
            raise UserError(f"{key}: '{path}' is not a run folder (no saved Hydra config inside)")
    refuse_links_out(path)  # before anything of the run is read back or written
    return path


def experiment_folder(overrides: Sequence[str]) -> Path:
    """``<paths.results_dir>/<name>`` of the experiment the command line's ``experiment=`` and ``paths.*`` select."""
    parsed = OverridesParser.create().parse_overrides([o for o in overrides if "=" in o and not o.startswith("-")])
    selection = [o.input_line for o in parsed if o.key_or_group == "experiment" or o.key_or_group.startswith("paths.")]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        defaults = compose(config_name="train", overrides=selection)
    return Path(defaults.paths.results_dir) / defaults.name


def best_checkpoint(run_dir: Path) -> Path | None:
    """The best checkpoint recorded by the checkpoint callback (a ModelCheckpoint) in ``last.ckpt``, mapped
    into this run folder."""
    layout = RunLayout(run_dir)
    if not layout.last_ckpt.is_file():
        return None
    state = load_checkpoint(layout.last_ckpt)
    for value in state.get("callbacks", {}).values():
        if isinstance(value, dict) and value.get("best_model_path"):
            candidate = layout.checkpoints / Path(value["best_model_path"]).name
            if candidate.is_file():
                return candidate
    return None


def load_checkpoint(path: Path) -> dict:
    """A checkpoint's contents, read as plain data (``weights_only``: tensors and containers, no code)."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise UserError(f"{path}: not a readable checkpoint of plain data ({str(exc).splitlines()[0][:200]})") from None


def find_checkpoint(run_dir: Path, which: str = "best") -> Path:
    """``best`` | ``last`` | a path -> an existing checkpoint file, or a UserError that says what is missing."""
    if which == "last":
        path = RunLayout(run_dir).last_ckpt
    elif which == "best":
        path = best_checkpoint(run_dir) or RunLayout(run_dir).last_ckpt
    else:
        path = Path(which).expanduser()
    if not path.is_file():
        raise UserError(f"ckpt: no checkpoint '{path}' in run '{run_dir}' (was the run trained for an epoch?)")
    return path


def resume_checkpoint(run_dir: Path) -> Path:
    """``last.ckpt`` of a run to continue, checked as plain data (Lightning's own load would fail later, with a
    traceback, on anything else)."""
    ckpt = RunLayout(run_dir).last_ckpt
    refuse_failed(run_dir)
    if not ckpt.is_file():
        raise UserError(f"resume: run '{run_dir}' has no last checkpoint ({ckpt}: it stopped before its first epoch "
                        "ended); start a new run instead")
    load_checkpoint(ckpt)
    return ckpt


def refuse_failed(run_dir: Path) -> None:
    """A run marked failed (it stopped before its first checkpoint) has nothing to continue: say why it failed."""
    state = read_state(run_dir)
    if state.startswith("failed"):
        raise UserError(f"resume: run '{run_dir}' {state}; it has no checkpoint to continue from: fix that and start "
                        "a new run")
