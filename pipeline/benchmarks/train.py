"""End-to-end training of the framework against a plain decode-once PyTorch loop doing the same work.

``python bin/benchmark.py train [experiment=<x>] [data.root=<real data>] [trainer.max_epochs=15] [plain=true]
[out=<file.json>] [key=value ...]`` (configs/benchmark.yaml: the experiment's training config plus these keys).

The framework run is the real path: the configured datamodule (``data.cache`` included), callbacks and
loggers, ``trainer.fit`` with its validation every epoch, then ``trainer.test`` on the best checkpoint.
The plain loop (``pipeline.benchmarks.plain_loop``) trains the same network, loss, optimiser and learning
rate schedule on the same split and preprocessing for the same epochs, in fp32 and the NCHW memory format
a loop written by hand uses (the framework's ``trainer.precision=auto``, bf16 where the device computes it
natively, and ``hyp.channels_last`` defaults are its own; pass ``trainer.precision=32-true
hyp.channels_last=false`` to compare the loops alone). The table's caption says which each side used. Both report the wall time from
start (data decoding included) to the end of training, training images per second over the training
steps, the share of that time spent waiting for data, and test accuracy. Tasks the plain loop does not
cover (verification, detection, ...) report the framework side only.
"""

from __future__ import annotations

import copy
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.fabric.utilities.seed import seed_everything
from omegaconf import DictConfig, open_dict
from rich.console import Console
from rich.table import Table

from pipeline.benchmarks import plain_loop
from pipeline.callbacks.throughput import Throughput
from pipeline.trainers.engine import (
    build_callbacks,
    build_datamodule,
    build_task,
    build_trainer,
    instantiate_each,
    wants_cuda,
)
from pipeline.utils.cli import run_hydra
from pipeline.utils.files import write_json

FIGURES = (("wall_s", "wall time to end of training (s)", "{:.1f}"), ("train_samples_per_sec", "train img/s", "{:.1f}"),
           ("data_wait_share", "data-wait share", "{:.1%}"), ("test_acc", "test accuracy", "{:.4f}"))


class TrainingTotals(Throughput):
    """The throughput callback's clock, summed over all training epochs instead of logged per epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.totals = {"samples": 0, "wait_s": 0.0, "compute_s": 0.0}

    def report(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for key in self.totals:
            self.totals[key] += getattr(self, key)


def device_of(cfg: DictConfig) -> torch.device:
    """The device the trainer config asks for (``auto`` -> CUDA when there is one)."""
    accelerator = cfg.trainer.get("accelerator", "cpu")
    return torch.device("cuda" if wants_cuda(accelerator) else "cpu")


def run_framework(cfg: DictConfig) -> dict[str, Any]:
    """Fit as ``bin/train.py`` does (one device), then test the best checkpoint."""
    start = time.perf_counter()
    seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    task = build_task(cfg, datamodule.info)
    totals = TrainingTotals()
    loggers = instantiate_each(cfg.get("logger"))
    trainer = build_trainer(cfg, devices=1, num_nodes=1, strategy="auto",
                            callbacks=[*build_callbacks(cfg, loggers), totals], logger=loggers or False)
    trainer.fit(task, datamodule=datamodule)
    wall_s = time.perf_counter() - start
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    tested = trainer.test(task, datamodule=datamodule, ckpt_path="best" if best else None, verbose=False)[0]
    return {**plain_loop.rates(totals.totals, wall_s), "test_acc": tested.get("test/acc", float("nan")),
            "test_metrics": tested}


def run_plain(cfg: DictConfig) -> dict[str, Any] | None:
    """The plain decode-once loop on the experiment's split, network and optimiser; None when the task
    is not one it covers."""
    start = time.perf_counter()
    seed_everything(cfg.seed, workers=True, verbose=False)
    with open_dict(cfg):
        cfg.data.cache = "none"  # the plain loop decodes by itself; no cache for it to find
        if "check_images" in cfg.data:
            cfg.data.check_images = False  # nor a separate pass: decoding every image finds a bad one
        cfg.hyp.channels_last = False  # a hand-written loop's NCHW tensors; channels_last is the framework's default
    datamodule = build_datamodule(cfg)
    if not plain_loop.supports(datamodule):
        return None
    task = build_task(cfg, datamodule.info)
    task.setup("fit")
    return plain_loop.run_plain(task, datamodule, int(cfg.trainer.max_epochs), device_of(cfg), int(cfg.seed), start)


def ratios(framework: dict[str, Any], plain: dict[str, Any] | None) -> dict[str, float]:
    """Framework over plain for wall time and img/s; test accuracy as a difference."""
    if plain is None:
        return {}
    return {"wall_time": framework["wall_s"] / plain["wall_s"],
            "train_samples_per_sec": framework["train_samples_per_sec"] / plain["train_samples_per_sec"],
            "test_acc_difference": framework["test_acc"] - plain["test_acc"]}


def print_table(title: str, framework: dict[str, Any], plain: dict[str, Any] | None, ratio: dict[str, float],
                report: dict[str, Any]) -> None:
    table = Table(title=title)
    for column in ("", "framework", "plain loop", "framework / plain"):
        table.add_column(column, justify="left" if not column else "right")
    by_figure = {"wall_s": "wall_time", "train_samples_per_sec": "train_samples_per_sec", "test_acc": "test_acc_difference"}
    for key, label, fmt in FIGURES:
        versus = ratio.get(by_figure.get(key, ""))
        table.add_row(label, fmt.format(framework[key]), fmt.format(plain[key]) if plain else "-",
                      "-" if versus is None else (f"{versus:+.4f} (difference)" if key == "test_acc" else f"{versus:.3f}x"))
    table.caption = ("the plain loop covers classification tasks only: framework figures alone" if plain is None
                     else f"framework: {report['precision']}, {'NHWC' if report['channels_last'] else 'NCHW'}; "
                          "plain loop: 32-true, NCHW")
    Console().print(table)


def main() -> None:
    """``bin/benchmark.py train``: the Hydra app of configs/benchmark.yaml."""
    run_hydra("benchmark", benchmark_training)


def benchmark_training(cfg: DictConfig) -> dict[str, Any]:
    """Train with the framework and with the plain loop; prints a table and writes the figures as JSON."""
    with tempfile.TemporaryDirectory(prefix="benchmark_") as scratch:
        with open_dict(cfg):
            cfg.paths.output_dir = scratch
        # The plain loop first: both then read the photos from the page cache.
        plain = run_plain(copy.deepcopy(cfg)) if cfg.plain else None
        framework = run_framework(cfg)
    ratio = ratios(framework, plain)
    report = {
        "experiment": cfg.name, "overrides": list(HydraConfig.get().overrides.task), "epochs": cfg.trainer.max_epochs,
        "batch_size": cfg.data.batch_size, "num_workers": cfg.data.get("num_workers"), "cache": cfg.data.get("cache"),
        "device": str(device_of(cfg)), "precision": str(cfg.trainer.precision), "channels_last": cfg.hyp.get("channels_last"), "torch_threads": torch.get_num_threads(),
        "framework": framework, "plain": plain, "framework_over_plain": ratio,
    }
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = Path(cfg.out or Path(cfg.paths.results_dir) / "benchmarks" / f"train_{cfg.name}_{stamp}.json")
    write_json(out, report)
    print_table(f"{cfg.name}: {cfg.trainer.max_epochs} epochs, batch {cfg.data.batch_size}, {report['device']}",
                framework, plain, ratio, report)
    print(f"Wrote {out}")
    return report
