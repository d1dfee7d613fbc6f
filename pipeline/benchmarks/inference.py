"""Inference benchmark of a trained run: size, batch-1 latency and batch throughput, PyTorch vs onnxruntime.

``python bin/benchmark.py inference [run=<folder>|latest] [experiment=<name>] [threads=1] [batch=64]
[runs=200] [warmup=20]`` prints a table and writes ``<run>/results/benchmark.json``.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from pipeline.delivery.answers import ExportSpec
from pipeline.delivery.backend import OnnxBackend, TorchBackend
from pipeline.delivery.export import ensure_export
from pipeline.runs.run import Run, run_command
from pipeline.utils.files import write_json


def time_calls(call: Callable[[], Any], runs: int, warmup: int) -> np.ndarray:
    """Seconds per call over ``runs`` timed calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        call()
        times[i] = time.perf_counter() - start
    return times


def measure(call_for_batch: Callable[[int], Callable[[], Any]], batch: int, runs: int, warmup: int) -> dict[str, float]:
    """Batch-1 latency (median, p95, ms) and batch-``batch`` throughput (samples/s)."""
    latency = time_calls(call_for_batch(1), runs, warmup) * 1000
    batch_runs = max(5, runs // 10)
    batch_times = time_calls(call_for_batch(batch), batch_runs, max(2, warmup // 10))
    return {
        "latency_ms_median": float(np.median(latency)),
        "latency_ms_p95": float(np.percentile(latency, 95)),
        "throughput_per_s": float(batch / np.median(batch_times)),
    }


def example_inputs(spec: ExportSpec, batch: int) -> dict[str, torch.Tensor]:
    """Random inputs shaped like the export's, with ``batch`` samples."""
    generator = torch.Generator().manual_seed(0)
    return {name: torch.randn(batch, *tensor.shape[1:], generator=generator) for name, tensor in spec.inputs.items()}


def benchmark(task: Any, onnx_path: Path, threads: int, batch: int, runs: int, warmup: int) -> dict[str, Any]:
    """Figures for the task's exported network in PyTorch eager mode and in onnxruntime, each called as predict
    and the service call it (``pipeline.delivery.backend``)."""
    spec = task.export_spec()
    torch.set_num_threads(threads)
    backends = {"torch": TorchBackend(spec), "onnxruntime": OnnxBackend(onnx_path, threads=threads)}

    def calls(backend: Any) -> Callable[[int], Callable[[], Any]]:
        return lambda n: functools.partial(backend, example_inputs(spec, n))

    return {
        "parameters": sum(p.numel() for p in spec.module.parameters()),
        "onnx_bytes": onnx_path.stat().st_size,
        "inputs": {name: list(tensor.shape[1:]) for name, tensor in spec.inputs.items()},
        "threads": threads,
        "batch": batch,
        "runs": runs,
        "warmup": warmup,
        **{name: measure(calls(backend), batch, runs, warmup) for name, backend in backends.items()},
    }


def print_table(title: str, figures: dict[str, Any]) -> None:
    """The benchmark figures as a console table."""
    table = Table(title=title)
    for column in ("backend", "batch-1 median ms", "batch-1 p95 ms", f"batch-{figures['batch']} samples/s"):
        table.add_column(column, justify="right")
    for backend in ("torch", "onnxruntime"):
        row = figures[backend]
        table.add_row(backend, f"{row['latency_ms_median']:.3f}", f"{row['latency_ms_p95']:.3f}", f"{row['throughput_per_s']:.0f}")
    console = Console()
    console.print(table)
    console.print(f"parameters {figures['parameters']:,}  onnx {figures['onnx_bytes'] / 1e6:.3f} MB  "
                  f"threads {figures['threads']}  inputs {figures['inputs']}")


@run_command("benchmark_inference")
def main(run: Run) -> dict[str, Any]:
    """Benchmark a run (see module docstring); returns the figures written to benchmark.json."""
    cfg = run.cfg
    settings = {key: int(cfg[key]) for key in ("threads", "batch", "runs", "warmup")}
    figures = benchmark(run.task(cfg.ckpt), ensure_export(run), **settings)
    figures["run"] = str(run.dir)
    out_file = run.layout.benchmark
    write_json(out_file, figures)
    print_table(f"{cfg.name}: inference benchmark", figures)
    print(f"Wrote {out_file}")
    return figures
