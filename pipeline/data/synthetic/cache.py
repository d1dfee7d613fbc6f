"""The one synthetic-data cache: generate a dataset folder once, reuse it after."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

READY_MARKER = ".complete"
# Bumped when the generators draw different images (2: the one face painter), so older copies are redrawn.
GENERATOR_VERSION = "2"


def is_current(folder: Path) -> bool:
    marker = folder / READY_MARKER
    return marker.is_file() and marker.read_text().strip() == f"v{GENERATOR_VERSION}"


def ensure_generated(folder: Path, generate: Callable[[Path], None]) -> Path:
    """``folder`` with the dataset ``generate(path)`` writes, generated only when no complete copy exists.

    It is written into a staging folder, marked complete, then renamed into place, so a half-written
    folder (no marker) is regenerated and two processes starting together cannot mix their files. A copy
    from an older generator (its marker names another ``GENERATOR_VERSION``) is replaced.
    """
    folder = Path(folder)
    if is_current(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    log.info("generating synthetic data into %s", folder)
    generate(staging)
    (staging / READY_MARKER).write_text(f"v{GENERATOR_VERSION}\n")
    if folder.exists() and not is_current(folder):
        shutil.rmtree(folder, ignore_errors=True)
    try:
        staging.rename(folder)
    except OSError:  # another process put a complete copy in place first
        shutil.rmtree(staging, ignore_errors=True)
    return folder
