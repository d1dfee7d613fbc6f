"""hyp.keep_freed_memory: glibc keeps what a step frees, so allocating the same blocks again faults no pages in."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from pipeline.trainers import base
from pipeline.utils import allocator

# Fifty blocks of 2 MB, allocated, written and freed 10 times after three, as a training step's activations are:
# glibc's default returns the freed top of its heap above twice its adaptive mmap threshold (here 4 MB) to the system.
PROBE = textwrap.dedent("""
    import resource, sys, torch
    if sys.argv[1] == "keep":
        from pipeline.utils.allocator import keep_freed_memory
        assert keep_freed_memory()
    faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):  # the first steps fault their memory in, with either allocator
        blocks = [torch.ones(1 << 19) for _ in range(50)]
        del blocks
    before = faults()
    for _ in range(10):
        blocks = [torch.ones(1 << 19) for _ in range(50)]
        del blocks
    print(faults() - before)
""")
PAGES = 10 * 50 * (2 << 20) // 4096


def page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True, cwd=base.__file__.rsplit("/pipeline/", 1)[0])
    return int(out.stdout.strip())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux")
def test_freed_blocks_come_back_without_page_faults():
    kept = page_faults("keep")
    assert kept < 0.05 * PAGES, (kept, PAGES)  # nearly every page of the 1 GB written is reused
    # (glibc's default often faults them in again, over half the pages in most runs alone, but not reliably: its
    # adaptive thresholds kept them in all three tries under the parallel suite, so no assertion rests on it. The probe
    # asserts that every mallopt setting was accepted.)


def test_the_task_applies_it_with_its_speed_switches(monkeypatch):
    called = []
    monkeypatch.setattr(base, "keep_freed_memory", lambda: called.append(True))

    class Task(base.BaseTask):
        def build_net(self):
            return torch.nn.Linear(2, 2)

    for setting in (True, False):
        called.clear()
        task = object.__new__(Task)
        torch.nn.Module.__init__(task)
        task.hyp = {"keep_freed_memory": setting}
        task.setup("fit")
        assert called == ([True] if setting else [])


def test_without_glibc_it_is_a_no_op(monkeypatch):
    allocator.keep_freed_memory.cache_clear()
    monkeypatch.setattr(allocator.ctypes.util, "find_library", lambda name: None)
    try:
        assert allocator.keep_freed_memory() is False
    finally:
        allocator.keep_freed_memory.cache_clear()
