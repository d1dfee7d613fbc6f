"""Training throughput of the framework against a hand-written PyTorch loop doing the same work.

``python bin/benchmark.py train [experiment=<x>] [steps=60] [warmup=10] [rounds=2] [out=<file.json>] [key=value ...]``
(configs/benchmark.yaml: the experiment's training config plus these keys).

Both runs use the experiment's datamodule (the same DataLoader: workers, sampler, batch size), the
task's network and loss (``model_step``) and its optimiser. The framework run is the real path:
``trainer.fit`` with the configured callbacks and loggers (validation off: the plain loop has none).
Throughput is counted over steps ``warmup..steps`` from the end of step ``warmup - 1``, so worker
start-up and first-step allocations are left out of both. The two loops alternate for ``rounds``
rounds and each keeps its best round, so a burst of load from other processes hurts neither.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.fabric.utilities.seed import seed_everything
from lightning.pytorch.utilities.data import extract_batch_size
from omegaconf import DictConfig, open_dict
from rich.console import Console
from rich.table import Table

from pipeline.trainers.engine import build_callbacks, build_datamodule, build_task, instantiate_each
from pipeline.utils.cli import run_hydra
from pipeline.utils.errors import UserError

AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


class StepClock(pl.Callback):
    """Wall time, CPU time of this process and sample count at the end of every training batch."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.cpu: list[float] = []
        self.sizes: list[int] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)
        self.ends.append(time.perf_counter())
        self.cpu.append(time.process_time())
        self.sizes.append(extract_batch_size(batch))


def rate(ends: list[float], cpu: list[float], sizes: list[int], warmup: int) -> dict[str, float]:
    """Samples/s and ms/step over the steps after ``warmup``, and the main process's CPU ms per step
    (steadier than wall time on a shared machine; DataLoader workers are not counted)."""
    first = max(warmup, 1) - 1  # timing starts at the end of this step
    if len(ends) <= first + 1:
        raise UserError(f"steps: only {len(ends)} training steps ran; give steps > warmup ({warmup}) and data for them")
    steps = len(ends) - 1 - first
    elapsed = ends[-1] - ends[first]
    return {"samples_per_sec": sum(sizes[first + 1:]) / elapsed, "step_ms": 1000 * elapsed / steps,
            "cpu_ms_per_step": 1000 * (cpu[-1] - cpu[first]) / steps, "steps": steps}


def device_of(cfg: DictConfig) -> torch.device:
    """The device the trainer config asks for (``auto`` -> CUDA when there is one)."""
    accelerator = cfg.trainer.get("accelerator", "cpu")
    wants_gpu = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if wants_gpu else "cpu")


def run_framework(cfg: DictConfig, steps: int, warmup: int) -> dict[str, float]:
    """``trainer.fit`` for ``steps`` steps with the configured callbacks and loggers."""
    seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    task = build_task(cfg, datamodule.info)
    clock = StepClock()
    loggers = instantiate_each(cfg.get("logger"))
    trainer: pl.Trainer = instantiate(
        cfg.trainer, max_steps=steps, max_epochs=None, limit_val_batches=0, num_sanity_val_steps=0,
        devices=1, num_nodes=1, strategy="auto", callbacks=[*build_callbacks(cfg, loggers), clock], logger=loggers or False,
    )
    trainer.fit(task, datamodule=datamodule)
    return rate(clock.ends, clock.cpu, clock.sizes, warmup)


def to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch.to(device, non_blocking=True) if isinstance(batch, torch.Tensor) else batch


def batches(loader, steps: int) -> Iterator[Any]:
    """``steps`` batches, starting the loader again (next epoch) when it runs out."""
    done, epoch = 0, 0
    while done < steps:
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        for batch in loader:
            yield batch
            done += 1
            if done == steps:
                return
        epoch += 1


def run_plain(cfg: DictConfig, steps: int, warmup: int) -> dict[str, float]:
    """A hand-written loop: forward + loss (the task's ``model_step``), backward, optimiser step."""
    seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    task = build_task(cfg, datamodule.info)
    task.setup("fit")
    device = device_of(cfg)
    task.to(device).train()
    optimizer = instantiate(cfg.hyp.optimizer)(params=[p for p in task.parameters() if p.requires_grad])
    dtype = AUTOCAST.get(str(cfg.trainer.precision))
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)
    ends, cpu, sizes = [], [], []
    for batch in batches(datamodule.train_dataloader(), steps):
        batch = to_device(batch, device)
        with torch.autocast(device.type, dtype=dtype) if dtype else nullcontext():
            loss = task.model_step(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        ends.append(time.perf_counter())
        cpu.append(time.process_time())
        sizes.append(extract_batch_size(batch))
    return rate(ends, cpu, sizes, warmup)


def print_table(title: str, rows: dict[str, dict[str, float]], ratio: float) -> None:
    table = Table(title=title)
    for column in ("loop", "samples/s", "ms/step", "CPU ms/step", "steps timed"):
        table.add_column(column, justify="right" if column != "loop" else "left")
    for name, row in rows.items():
        table.add_row(name, f"{row['samples_per_sec']:.1f}", f"{row['step_ms']:.2f}", f"{row['cpu_ms_per_step']:.2f}",
                      str(row["steps"]))
    table.caption = f"framework / plain = {ratio:.3f}"
    Console().print(table)


def main() -> None:
    """``bin/benchmark.py train``: the Hydra app of configs/benchmark.yaml."""
    run_hydra("benchmark", benchmark_training)


def benchmark_training(cfg: DictConfig) -> dict[str, Any]:
    """Benchmark training throughput; prints a table and writes the figures as JSON."""
    with tempfile.TemporaryDirectory(prefix="benchmark_") as scratch:
        with open_dict(cfg):
            cfg.paths.output_dir = scratch
        rounds = [{"plain": run_plain(cfg, cfg.steps, cfg.warmup), "framework": run_framework(cfg, cfg.steps, cfg.warmup)}
                  for _ in range(max(cfg.rounds, 1))]
    rows = {name: max((r[name] for r in rounds), key=lambda row: row["samples_per_sec"]) for name in ("plain", "framework")}
    ratio = rows["framework"]["samples_per_sec"] / rows["plain"]["samples_per_sec"]
    report = {
        "experiment": cfg.name, "overrides": list(HydraConfig.get().overrides.task), "batch_size": cfg.data.batch_size,
        "num_workers": cfg.data.get("num_workers"), "device": str(device_of(cfg)),
        "precision": str(cfg.trainer.precision), "torch_threads": torch.get_num_threads(),
        **rows, "framework_over_plain": ratio, "rounds": rounds,
    }
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = Path(cfg.out or Path(cfg.paths.results_dir) / "benchmarks" / f"train_{cfg.name}_{stamp}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print_table(f"{cfg.name}: training throughput (batch {cfg.data.batch_size}, {report['device']})", rows, ratio)
    print(f"Wrote {out}")
    return report
