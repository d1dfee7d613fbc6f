"""Progress bars for the command-line tools, in the Rich style of the training bar."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")


def rich_progress() -> Progress:
    """A bar laid out like Lightning's ``RichProgressBar``: description, bar, count, elapsed • remaining."""
    return Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("•"), TimeRemainingColumn())


def batched(items: Sequence[T], batch_size: int, unit: str = "images") -> Iterator[list[T]]:
    """Consecutive chunks of ``items`` with a Rich bar counting items."""
    with rich_progress() as progress:
        task = progress.add_task(f"Predicting {unit}", total=len(items))
        for start in range(0, len(items), batch_size):
            chunk = list(items[start : start + batch_size])
            yield chunk
            progress.advance(task, len(chunk))
