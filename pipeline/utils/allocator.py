"""Keep the memory a training step frees in the process (glibc's ``mallopt``), instead of handing it back to the
operating system and faulting it in again, page by page, at the next step.

A CPU training step allocates and frees the same activations every step (tens of MB each for a resnet18 at 96 px).
glibc returns a freed top of its heap above ``M_TRIM_THRESHOLD`` to the system and serves large blocks by ``mmap``
(freed with ``munmap``), so each step faults thousands of zeroed pages in again; how many depends on the state of
the process's heap, which a framework process (configs, loggers, figures) has more of than a bare loop. Raising the
trim threshold and the top pad and fixing the mmap threshold at its maximum, as jemalloc/tcmalloc set-ups for CPU
training do, keeps that memory: on 2 CPU cores, a resnet18's forward 165 ms instead of 186 and backward 410 instead of
466 in a framework process (medians over four interleaved epochs of `bin/benchmark.py train`; the tuned loop's 162
and 400). Linux with glibc only; a no-op elsewhere. The process's resident memory then stays at its peak until it ends.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
SETTINGS = {M_TRIM_THRESHOLD: 1 << 30, M_TOP_PAD: 256 << 20, M_MMAP_THRESHOLD: 32 << 20}  # 32 MiB: glibc's maximum


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's allocator to keep freed memory (once per process); False where there is no glibc ``mallopt``."""
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt if name else None
    except (OSError, AttributeError):
        mallopt = None
    ok = mallopt is not None and all(mallopt(option, value) == 1 for option, value in SETTINGS.items())
    if not ok:
        log.debug("hyp.keep_freed_memory: no glibc mallopt here (%s); the allocator is left as it is", name)
    return ok
