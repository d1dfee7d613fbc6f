"""The process's own clock: monotonic seconds, less the time the process was paused on purpose.

The callbacks that act on or report elapsed time (``FigureBudget``'s share of the training time for figures,
``Checkpoints``' ``last_interval_s``, ``Throughput``'s step and data-wait clock, ``EpochLog``'s epoch seconds) read
it. A process that waits while others use the machine (``bin/benchmark.py train``'s interleaved sides take turns
half an epoch at a time) says how long with ``pause``;
without that, such a side's figure budget grew with the others' turns (it drew results.png every epoch
from the fifth on, 0.4 s each, where alone it draws every few epochs) and its ``last.ckpt`` fell due
three times as often.
"""

from __future__ import annotations

import time

_paused_s = 0.0


def now() -> float:
    """Seconds on a monotonic clock that stands still while the process is paused (``pause``)."""
    return time.perf_counter() - _paused_s


def pause(seconds: float) -> None:
    """The process waited ``seconds`` for others (none of its own work ran): leave them out of ``now()``."""
    global _paused_s
    _paused_s += max(0.0, float(seconds))
