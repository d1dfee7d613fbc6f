"""Progress bars for the command-line tools."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TypeVar

from tqdm import tqdm

T = TypeVar("T")


def batched(items: Sequence[T], batch_size: int, unit: str = "images") -> Iterator[list[T]]:
    """Consecutive chunks of ``items`` with a progress bar counting items (on stderr)."""
    with tqdm(total=len(items), unit=f" {unit}", dynamic_ncols=True) as bar:
        for start in range(0, len(items), batch_size):
            chunk = list(items[start : start + batch_size])
            yield chunk
            bar.update(len(chunk))
