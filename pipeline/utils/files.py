"""Files the framework writes into a run folder: written aside, then renamed, so no reader ever sees half a file."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def replacing(path: str | Path) -> Iterator[Path]:
    """A temporary path next to ``path`` to write to; it replaces ``path`` only if the block ends without error.

    Same folder, so ``os.replace`` is an atomic rename: a crash or kill leaves the old file or the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield staging
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with replacing(path) as staging:
        staging.write_text(text, encoding="utf-8")


def write_json(path: str | Path, payload: Any, indent: int = 2) -> None:
    """Write ``payload`` as JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(payload, indent=indent))
