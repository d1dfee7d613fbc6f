"""bin/benchmark.py gpu: a clean skip without CUDA, the matrix it would run, and its measuring window (on CPU)."""

from __future__ import annotations

import itertools

import pytest
import torch
from conftest import CONFIG_DIR, run_main
from omegaconf import OmegaConf

from pipeline.benchmarks.gpu import cases, kernel_busy_seconds, run_case

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would run")


@no_cuda
def test_gpu_check_without_cuda_says_why_in_one_line_and_exits_0(tmp_path):
    proc = run_main("benchmark.py", "gpu", f"out={tmp_path / 'gpu.json'}")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("GPU check skipped: ") and "CUDA" in lines[0], proc.stdout
    assert not (tmp_path / "gpu.json").exists()


def test_gpu_check_matrix_covers_precision_memory_format_compile_and_ddp(tmp_path):
    proc = run_main("benchmark.py", "gpu", "dry_run=true", "assume_gpus=2", f"photos={tmp_path}")
    assert proc.returncode == 0, proc.stderr
    planned = [line for line in proc.stdout.splitlines() if line.startswith("would run: ")]
    # Per task: 1 GPU: 2 precisions x (NCHW, NHWC without compile + NHWC compiled); DDP on 2 GPUs: without compile.
    assert len(planned) == 2 * (2 * 3 + 2 * 2) and "20 cases, 15 + 40 steps each" in proc.stdout
    classification = [line for line in planned if line.startswith("would run: classification (real)")]
    assert len(classification) == 10
    assert all(f"data.root={tmp_path}" in line and "model=resnet18" in line and "data.image_size=[96,96]" in line
               for line in classification)
    detection = [line for line in planned if "experiment=facemask_detection" in line]
    assert len(detection) == 10 and not any("data.root=" in line for line in detection)  # its synthetic data
    assert sum("2 GPUs, DDP" in line for line in planned) == 8
    assert not any("DDP" in line and "compile on" in line for line in planned)

    full = cases(OmegaConf.merge(OmegaConf.load(CONFIG_DIR / "benchmark_gpu.yaml"), {"compile_nchw": True, "ddp": "false"}), 4)
    combos = {(c["task"], c["precision"], c["channels_last"], c["compile"]) for c in full}
    assert len(full) == len(combos) == 16 and {c["devices"] for c in full} == {1}
    assert combos == set(itertools.product(["classification", "detection"], ["32-true", "bf16-mixed"], [False, True],
                                           [False, True]))


def test_gpu_check_refuses_an_unknown_task_in_one_line():
    proc = run_main("benchmark.py", "gpu", "dry_run=true", "tasks=[classification,segmentation]")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: tasks: unknown ['segmentation']; choose from ['classification', 'detection']"


@pytest.mark.slow  # a real (tiny) training through Lightning: ~15 s on 2 shared cores
def test_gpu_check_window_counts_the_measured_steps(tmp_path):
    # The case runner itself, on CPU: warm-up steps excluded, the window's images are steps x batch.
    case = {"task": "classification", "devices": 1, "overrides": [
        "experiment=image_folder", "data.image_size=[16,16]", "data.synthetic.num_people=12", "data.num_workers=0",
        "hyp.batch_size=4", "trainer.precision=32-true", "data.cache=none", "model=small_cnn"]}
    figures = run_case(case, {"scratch": str(tmp_path), "warmup": 2, "steps": 3, "accelerator": "cpu"})
    assert figures["steps"] == 3 and figures["window_s"] > 0
    assert figures["img_per_s"] == pytest.approx(3 * 4 / figures["window_s"])
    assert 0 <= figures["data_wait_share"] < 1 and figures["peak_memory_mb"] > 0
    assert figures["gpu_busy_share"] is None and figures["gpu_busy_method"] == "none"


class _Span:
    def __init__(self, start: float, end: float) -> None:
        self.start, self.end = start, end


class _Event:
    def __init__(self, start: float, end: float, device: str = "DeviceType.CUDA") -> None:
        self.time_range, self.device_type = _Span(start, end), device


class _Trace:
    def __init__(self, events: list[_Event]) -> None:
        self._events = events

    def events(self) -> list[_Event]:
        return self._events


def test_kernel_busy_time_counts_overlapping_kernels_once():
    # Kernels at [0, 10] and [5, 20] (overlapping streams) and [30, 35] us; a CPU op is not GPU time.
    trace = _Trace([_Event(5, 20), _Event(0, 10), _Event(30, 35), _Event(0, 100, "DeviceType.CPU")])
    assert kernel_busy_seconds(trace) == pytest.approx(25e-6)
