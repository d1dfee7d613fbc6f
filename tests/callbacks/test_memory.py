import gc
import subprocess
import sys

import pytest

from pipeline.callbacks.memory import FrozenSetup


def test_objects_alive_at_the_start_are_frozen_for_the_training_and_given_back():
    kept = [object() for _ in range(10)]
    callback = FrozenSetup()
    callback.on_train_start(None, None)
    try:
        assert gc.get_freeze_count() >= len(kept)
        cycle = []
        cycle.append(cycle)  # made during training: still collected
        del cycle
        assert gc.collect() >= 1
    finally:
        callback.on_train_end(None, None)
    assert gc.get_freeze_count() == 0


def test_an_exception_gives_them_back_too():
    callback = FrozenSetup()
    callback.on_train_start(None, None)
    callback.on_exception(None, None, RuntimeError("stop"))
    assert gc.get_freeze_count() == 0


HEAP_PROBE = """
import ctypes, sys
from types import SimpleNamespace
import numpy as np
import torch
from pipeline.callbacks.memory import HeapReuse

class MallInfo2(ctypes.Structure):  # glibc's struct mallinfo2: what the allocator holds, and how
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2

def mapped_while_held():  # bytes in separately mmapped blocks while a 64 MB block is held
    block = np.ones(64 << 20, dtype=np.uint8)
    mapped = libc.mallinfo2().hblkhd
    del block
    return mapped

default = mapped_while_held()
gpu = HeapReuse()
gpu.on_fit_start(SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0))), None)
on_gpu = mapped_while_held()
cpu = HeapReuse()
cpu.on_fit_start(SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cpu"))), None)
print(default, on_gpu, mapped_while_held(), gpu.applied, cpu.applied)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's allocator")
def test_a_cpu_training_keeps_freed_memory_on_the_heap_for_the_next_step():
    proc = subprocess.run([sys.executable, "-c", HEAP_PROBE], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    default, on_gpu, on_cpu, applied_gpu, applied_cpu = proc.stdout.split()
    assert (applied_gpu, applied_cpu) == ("False", "True")  # a GPU training's tensors are not on this heap: left alone
    # glibc's default maps a 64 MB block by itself (unmapped when freed, faulted in again when next asked for),
    # and still does after a GPU training starts; after a CPU training starts, the heap serves it.
    assert int(default) >= 64 << 20 and int(on_gpu) >= 64 << 20 and int(on_cpu) < 64 << 20
