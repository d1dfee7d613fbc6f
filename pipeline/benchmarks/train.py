"""End-to-end training of the framework against a plain decode-once PyTorch loop doing the same work.

``python bin/benchmark.py train [experiment=<x>] [data.root=<real data>] [trainer.max_epochs=15] [plain=true]
[repeats=1] [out=<file.json>] [key=value ...]`` (configs/benchmark.yaml: the experiment's training config plus these keys).

The framework run is the real path: the configured datamodule (``data.cache`` included), callbacks and
loggers, ``trainer.fit`` with its validation every epoch, then ``trainer.test`` on the best checkpoint.
The plain loop (``pipeline.benchmarks.plain_loop``) trains the same network, loss, optimiser and learning
rate schedule on the same split and preprocessing for the same epochs, twice: in fp32 and the NCHW memory
format a loop written by hand first uses, and tuned, in the framework's own precision and memory format
(``trainer.precision=auto`` resolves to bf16 where the device computes it natively; ``hyp.channels_last``),
so that the ratio against the tuned loop is the framework's own cost and the one against the fp32 loop
includes the speed switches. The table's caption says which each side used. All report the wall time
from start (data decoding included) to the end of training, training images per second over the training
steps, the share of that time spent waiting for data, and test accuracy; and the achieved FLOP/s of the
training steps (one step's FLOPs per item, counted by ``FlopCounterMode``, times the img/s) against the
device's measured matrix-multiply peak in the same precision. The three run each in a process of its own, at once
taking turns on the machine half an epoch to half an epoch (``interleave: epochs``, ``Turns``) or one after the other
(``interleave: none``, ``in_own_process``), in an order rotated from repeat to repeat (``run_order``). Tasks the
plain loop does not cover (verification, detection, ...) report the framework side only.
"""

from __future__ import annotations

import copy
import logging.config
import multiprocessing
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.fabric.utilities.seed import seed_everything
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.console import Console
from rich.table import Table

from pipeline.benchmarks import plain_loop
from pipeline.callbacks.model_selection import wait_for_writes
from pipeline.callbacks.throughput import Throughput
from pipeline.runs.run import build_datamodule, build_task
from pipeline.trainers.engine import (
    build_callbacks,
    build_trainer,
    instantiate_each,
    resolve_precision,
    wants_cuda,
)
from pipeline.utils import clock
from pipeline.utils.cli import run_hydra
from pipeline.utils.errors import UserError
from pipeline.utils.files import write_json

FIGURES = (("wall_s", "wall time to end of training (s)", "{:.1f}"), ("cpu_s", "CPU time to end of training (s)", "{:.1f}"),
           ("before_training_s", "  of it before the first training step (s)", "{:.2f}"),
           ("validation_s", "  of it in validation passes (s)", "{:.2f}"),
           ("after_training_s", "  of it after the last training epoch (s)", "{:.2f}"),
           ("train_samples_per_sec", "train img/s", "{:.1f}"),
           ("data_wait_share", "data-wait share", "{:.1%}"), ("test_acc", "test accuracy", "{:.4f}"))


class TrainingTotals(Throughput):
    """The throughput callback's clock, summed over all training epochs instead of logged per epoch; and the
    moments that split a run into phases (``phases``): training's start (after the sanity check), each validation
    pass, the last training epoch's end. Added after every other callback, so their hooks fall inside."""

    def __init__(self) -> None:
        super().__init__()
        self.totals = {"samples": 0, "wait_s": 0.0, "compute_s": 0.0}
        self.marks = {"train_start": 0.0, "validation_s": 0.0, "last_epoch_end": 0.0, "validation_start": 0.0}

    def report(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for key in self.totals:
            self.totals[key] += getattr(self, key)
        self.marks["last_epoch_end"] = time.perf_counter()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.marks["train_start"] = time.perf_counter()

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.marks["validation_start"] = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.marks["validation_s"] += time.perf_counter() - self.marks["validation_start"]

    def phases(self, start: float, end: float) -> dict[str, float]:
        """Seconds from ``start`` to training's first step (the sanity check included), in validation passes, and
        from the last training epoch's end to ``end`` (the figures and reports drawn when training ends). The turns
        of an interleaved benchmark (``Pause``) fall in the middle of training epochs, outside all three."""
        return {"before_training_s": self.marks["train_start"] - start, "validation_s": self.marks["validation_s"],
                "after_training_s": end - self.marks["last_epoch_end"]}


class Turns:
    """Turns on the machine for the sides of one repeat, each in its own process (``interleave: epochs``): one side
    runs at a time, from its start to the middle of its first epoch, then from the middle of one epoch to the middle of
    the next (``Pause``, ``plain_loop.train_epoch``), then from the middle of its last epoch to its end, handing over
    to the next unfinished side in ``names`` after each segment (the others wait blocked, using no CPU). A drift of
    the machine's speed over minutes then falls on every side alike, where one side after the other gave it to
    whichever ran in the slow minutes. ``pause()`` returns the seconds a side waited; each side leaves them
    out of its wall time."""

    WAIT_S = 5.0  # how often a waiting side checks whether the repeat was abandoned (a side that died)

    def __init__(self, names: list[str], context: Any) -> None:
        self.names = list(names)
        self.go = {name: context.Semaphore(0) for name in self.names}
        self.done = context.Array("b", len(self.names))
        self.abandoned = context.Value("b", 0)
        self.lock = context.Lock()
        self.me: str | None = None

    def start(self) -> None:
        """In the parent: the first side's turn."""
        self.go[self.names[0]].release()

    def begin(self, name: str) -> None:
        """In side ``name``'s process, before anything is timed: wait for its first turn."""
        self.me = name
        self.wait()

    def wait(self) -> float:
        """Block until this side's turn; the seconds waited, also left out of the process's own clock
        (``pipeline.utils.clock``), which the framework's figure budget, ``last.ckpt`` interval and throughput read."""
        began = time.perf_counter()
        while not self.go[self.me].acquire(timeout=self.WAIT_S):
            if self.abandoned.value:
                raise UserError("benchmark: another side of this repeat failed; see its error above")
        waited = time.perf_counter() - began
        clock.pause(waited)
        return waited

    def following(self) -> str | None:
        """The next side after this one that has not finished (None: none, or only this one)."""
        at, count = self.names.index(self.me), len(self.names)
        return next((self.names[i % count] for i in range(at + 1, at + count) if not self.done[i % count]), None)

    def pause(self) -> float:
        """End of a segment: hand the machine to the next unfinished side and wait for this one's next turn."""
        with self.lock:
            following = self.following()
            if following is None:
                return 0.0
            self.go[following].release()
        return self.wait()

    def finish(self) -> None:
        """This side is done (or failed): the next unfinished side's turn."""
        with self.lock:
            self.done[self.names.index(self.me)] = 1
            following = self.following()
        if following is not None:
            self.go[following].release()


class Pause(pl.Callback):
    """Halfway through each training epoch, before its middle batch (``plain_loop.middle_batch``), ``pause()``: the
    benchmark hands the machine to the other sides there (``Turns``). Mid-epoch rather than between epochs: the
    checkpoint an epoch queues at its end (``AsyncCheckpointIO``) is then written while the next epoch trains, as in a
    training alone; handed over at the epoch's boundary, it had to be drained first, 0.3 s a resnet18 checkpoint that
    never overlapped a step. Whatever is still pending is drained before the hand-over all the same, so that no write
    runs in another side's turn. First among the callbacks: ``Turns.wait`` has reported the wait to the process's own
    clock (``pipeline.utils.clock``) before any other hook reads it, so that the throughput clock, the figure budget
    and ``last.ckpt``'s interval see the time this side ran, as in a training alone. ``paused_s``: the seconds spent
    waiting, left out of the framework's wall time."""

    def __init__(self, pause: Any) -> None:
        self.pause, self.paused_s = pause, 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if batch_idx != plain_loop.middle_batch(trainer.num_training_batches):
            return
        wait_for_writes(trainer)
        self.paused_s += self.pause()


def device_of(cfg: DictConfig) -> torch.device:
    """The device the trainer config asks for (``auto`` -> CUDA when there is one)."""
    accelerator = cfg.trainer.get("accelerator", "cpu")
    return torch.device("cuda" if wants_cuda(accelerator) else "cpu")


def run_framework(cfg: DictConfig, pause: Any = None) -> dict[str, Any]:
    """Fit as ``bin/train.py`` does (one device), then test the best checkpoint; ``pause()`` in the middle of each epoch
    (``Pause``), its waits left out of the wall time."""
    start, cpu_start = time.perf_counter(), time.process_time()
    seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = build_datamodule(cfg)
    task = build_task(cfg, datamodule.info)
    totals = TrainingTotals()
    loggers = instantiate_each(cfg.get("logger"))
    paused = [Pause(pause)] if pause else []
    trainer = build_trainer(cfg, devices=1, num_nodes=1, strategy="auto",
                            callbacks=[*paused, *build_callbacks(cfg, loggers), totals], logger=loggers or False)
    trainer.fit(task, datamodule=datamodule)
    end, cpu_s = time.perf_counter(), time.process_time() - cpu_start
    waited = paused[0].paused_s if paused else 0.0  # the other sides' turns: not this side's time
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    tested = trainer.test(task, datamodule=datamodule, ckpt_path="best" if best else None, verbose=False)[0]
    return {**plain_loop.rates(totals.totals, end - start - waited, cpu_s), **totals.phases(start, end),
            "test_acc": tested.get("test/acc", float("nan")), "test_metrics": tested}


def run_plain(cfg: DictConfig, tuned: bool = False, pause: Any = None) -> dict[str, Any] | None:
    """The plain decode-once loop on the experiment's split, network and optimiser (``tuned``: in the
    framework's resolved precision and ``hyp.channels_last``; else fp32, NCHW); None when the task is not
    one it covers."""
    start, cpu_start = time.perf_counter(), time.process_time()
    seed_everything(cfg.seed, workers=True, verbose=False)
    with open_dict(cfg):
        cfg.data.cache = "none"  # the plain loop decodes by itself; no cache for it to find
        if "check_images" in cfg.data:
            cfg.data.check_images = False  # nor a separate pass: decoding every image finds a bad one
        if not tuned:
            cfg.hyp.channels_last = False  # a first hand-written loop's NCHW tensors
            cfg.hyp.keep_freed_memory = False  # and the allocator as it comes
    datamodule = build_datamodule(cfg)
    if not plain_loop.supports(datamodule):
        return None
    task = build_task(cfg, datamodule.info)
    task.setup("fit")
    dtype = plain_loop.autocast_dtype(str(cfg.trainer.precision)) if tuned else None
    return plain_loop.run_plain(task, datamodule, int(cfg.trainer.max_epochs), device_of(cfg), int(cfg.seed), start, dtype,
                                cpu_start, pause)


def ratios(framework: dict[str, Any], plain: dict[str, Any] | None) -> dict[str, float]:
    """Framework over plain for wall time, CPU time (where both have it) and img/s; test accuracy as a difference."""
    if plain is None:
        return {}
    cpu = {"cpu_time": framework["cpu_s"] / plain["cpu_s"]} if framework.get("cpu_s") and plain.get("cpu_s") else {}
    return {"wall_time": framework["wall_s"] / plain["wall_s"], **cpu,
            "train_samples_per_sec": framework["train_samples_per_sec"] / plain["train_samples_per_sec"],
            "test_acc_difference": framework["test_acc"] - plain["test_acc"]}


def flop_rates(report: dict[str, Any], peaks: dict[str, float]) -> dict[str, Any]:
    """Achieved training FLOP/s of each loop (FLOPs per item x img/s) and their share of the matmul peak in
    the loop's precision (``peaks``: precision -> FLOP/s)."""
    per_item = (report.get("tuned") or report.get("plain") or {}).get("step_flops_per_item")
    if not per_item:
        return {}
    out: dict[str, Any] = {"step_flops_per_item": per_item, "matmul_peak_flops": peaks}
    for side, precision in (("framework", report["precision"]), ("tuned", report["precision"]), ("plain", "32-true")):
        figures = report.get(side)
        if figures and precision in peaks:
            achieved = per_item * figures["train_samples_per_sec"]
            out[side] = {"achieved_flops": achieved, "share_of_peak": achieved / peaks[precision]}
    return out


def cell(value: float | None, fmt: str, difference: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.4f} (difference)" if difference else fmt.format(value)


def print_table(title: str, framework: dict[str, Any], plain: dict[str, Any] | None, ratio: dict[str, float],
                report: dict[str, Any], tuned: dict[str, Any] | None = None, tuned_ratio: dict[str, float] | None = None,
                flops: dict[str, Any] | None = None) -> None:
    table = Table(title=title)
    for column in ("", "framework", "plain loop", "tuned loop", "framework / plain", "framework / tuned"):
        table.add_column(column, justify="left" if not column else "right")
    by_figure = {"wall_s": "wall_time", "cpu_s": "cpu_time", "train_samples_per_sec": "train_samples_per_sec", "test_acc": "test_acc_difference"}
    for key, label, fmt in FIGURES:
        versus = [(r or {}).get(by_figure.get(key, "")) for r in (ratio, tuned_ratio)]
        table.add_row(label, *(fmt.format(figures[key]) if figures and key in figures else "-"
                               for figures in (framework, plain, tuned)),
                      *(cell(v, "{:.3f}x", difference=key == "test_acc") for v in versus))
    if flops:
        shares = [flops.get(side) for side in ("framework", "plain", "tuned")]
        table.add_row("train GFLOP/s (share of matmul peak)",
                      *(f"{s['achieved_flops'] / 1e9:.1f} ({s['share_of_peak']:.1%})" if s else "-" for s in shares), "", "")
    style = f"{report['precision']}, {'NHWC' if report['channels_last'] else 'NCHW'}"
    table.caption = ("the plain loop covers classification tasks only: framework figures alone" if plain is None and tuned is None
                     else f"framework: {style}; plain loop: 32-true, NCHW; tuned loop: {style}")
    console = Console()
    (console if console.is_terminal else Console(width=170)).print(table)  # a log file gets the table unwrapped


def main() -> None:
    """``bin/benchmark.py train``: the Hydra app of configs/benchmark.yaml."""
    run_hydra("benchmark", benchmark_training)


def median_ratios(repeats: list[dict[str, Any]]) -> dict[str, float]:
    """The median over repeats of each wall-time, CPU-time and img/s ratio (framework over plain / over tuned)."""
    out = {}
    for side in ("framework_over_plain", "framework_over_tuned"):
        for key in ("wall_time", "cpu_time", "train_samples_per_sec"):
            values = sorted(r[side][key] for r in repeats if key in r.get(side, {}))
            if values:
                middle = len(values) // 2
                out[f"{side}.{key}"] = values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2
    return out


SIDES = ("plain", "tuned", "framework")


def run_order(repeat: int) -> tuple[str, ...]:
    """The order of the three sides in repeat ``repeat`` (0-based): the plain loop first in the first repeat (it
    reads the photos into the page cache for all), then rotated, so that over three repeats each side runs once
    first, once second and once third, and a drift of the machine's speed favours none of them."""
    shift = repeat % len(SIDES)
    return SIDES[-shift:] + SIDES[:-shift] if shift else SIDES


TURNS: list[Turns] = []  # in an interleaved side's process: the repeat's turns (``start_side``)


def side(name: str, cfg: DictConfig, interleave: bool = False) -> dict[str, Any] | None:
    """One side's figures: ``framework``, ``plain`` (fp32, NCHW) or ``tuned`` (None for a loop the task lacks); with
    ``interleave``, run in its turns only (``Turns``)."""
    turns = TURNS[0] if interleave else None
    if turns is not None:
        turns.begin(name)
    try:
        pause = turns.pause if turns is not None else None
        if name == "framework":
            return run_framework(cfg, pause)
        return run_plain(cfg, tuned=name == "tuned", pause=pause) if cfg.plain else None
    finally:
        if turns is not None:
            turns.finish()


def own_copy(cfg: DictConfig) -> DictConfig:
    cfg = copy.deepcopy(cfg)
    OmegaConf.resolve(cfg)  # a spawned child has no Hydra context to resolve ``${hydra:...}`` in
    return cfg


def process_context() -> Any:
    """Spawned, never forked: a CUDA context cannot cross a fork, and neither can the OpenMP thread pool of a parent
    that has run a parallel region (a training in the same process first, as the test suite's or a notebook's): a
    forked child's first parallel region can wait forever on threads that are not there (GNU libgomp; seen here)."""
    return multiprocessing.get_context("spawn")


def job_logging() -> dict[str, Any] | None:
    """The command's logging setup (``hydra.job_logging``), for the sides' processes to log as it does."""
    return OmegaConf.to_container(HydraConfig.get().job_logging) if HydraConfig.initialized() else None


def start_side(turns: Turns | None, logging_setup: dict[str, Any] | None) -> None:
    """A process pool's initializer: the command's logging; and (``interleave: epochs``) the repeat's turns, which
    reach a process when it starts, not as an argument of a task."""
    if logging_setup:
        logging.config.dictConfig(logging_setup)
    TURNS[:] = [turns] if turns is not None else []


def in_own_process(name: str, cfg: DictConfig) -> dict[str, Any] | None:
    """``side(name, cfg)`` in a new child process, so that what one side leaves in a process (its allocator's
    heap, threads, caches, garbage) cannot speed up or slow down the next."""
    with ProcessPoolExecutor(max_workers=1, mp_context=process_context(), initializer=start_side,
                             initargs=(None, job_logging())) as pool:
        return pool.submit(side, name, own_copy(cfg)).result()


def interleave_mode(cfg: DictConfig) -> str:
    mode = str(cfg.get("interleave", "none"))
    if mode not in ("epochs", "none"):
        raise UserError(f"interleave: '{mode}' is not a mode; epochs (the sides take turns epoch by epoch) or none "
                        "(each side runs whole, one after the other)")
    return mode


def interleaved(names: tuple[str, ...], cfg: DictConfig) -> dict[str, Any]:
    """Every side of ``names`` in its own process at once, taking turns epoch by epoch (``Turns``), ``names[0]`` first."""
    context = process_context()
    turns = Turns(list(names), context)
    with ProcessPoolExecutor(max_workers=len(names), mp_context=context, initializer=start_side,
                             initargs=(turns, job_logging())) as pool:
        futures = {name: pool.submit(side, name, own_copy(cfg), True) for name in names}
        turns.start()
        try:
            return {name: future.result() for name, future in futures.items()}
        except BaseException:
            turns.abandoned.value = 1
            raise


def run_once(cfg: DictConfig, repeat: int = 0) -> dict[str, Any]:
    """One repeat: the plain loop, the tuned loop and the framework in ``run_order(repeat)``, each from a fresh
    copy of ``cfg`` in its own process: one after the other, or (``interleave: epochs``) taking turns epoch by epoch."""
    with tempfile.TemporaryDirectory(prefix="benchmark_") as scratch:
        with open_dict(cfg):
            cfg.paths.output_dir = scratch
        order, mode = run_order(repeat), interleave_mode(cfg)
        if mode == "epochs" and cfg.plain:
            results = interleaved(order, cfg)
        else:
            results = {}
            for name in order:
                loop_lacking = name != "framework" and any(loop in results and results[loop] is None for loop in ("plain", "tuned"))
                results[name] = None if loop_lacking else in_own_process(name, cfg)  # the task has no plain loop
    framework, plain, tuned = (results[name] for name in ("framework", "plain", "tuned"))
    return {"framework": framework, "plain": plain, "tuned": tuned, "order": list(order),
            "interleave": mode,
            "framework_over_plain": ratios(framework, plain), "framework_over_tuned": ratios(framework, tuned)}


def benchmark_training(cfg: DictConfig) -> dict[str, Any]:
    """Train with the framework and with the plain loop (``repeats`` times); prints a table and writes the
    figures as JSON (the last repeat's at the top level, every repeat's and the median ratios with repeats > 1)."""
    interleave_mode(cfg)  # a wrong mode stops before anything runs
    resolve_precision(cfg.trainer)  # once, so that the tuned loop and the report use the framework's choice
    count = cfg.get("repeats", 1)
    if not isinstance(count, int) or count < 1:
        raise UserError(f"repeats: '{count}' is not a whole number >= 1")
    repeats = [run_once(cfg, repeat) for repeat in range(count)]
    framework, plain, tuned = (repeats[-1][side] for side in ("framework", "plain", "tuned"))
    ratio, tuned_ratio = ratios(framework, plain), ratios(framework, tuned)
    report = {
        "experiment": cfg.name, "overrides": list(HydraConfig.get().overrides.task), "epochs": cfg.trainer.max_epochs,
        "batch_size": cfg.data.batch_size, "num_workers": cfg.data.get("num_workers"), "cache": cfg.data.get("cache"),
        "interleave": interleave_mode(cfg), "device": str(device_of(cfg)), "precision": str(cfg.trainer.precision), "channels_last": cfg.hyp.get("channels_last"), "torch_threads": torch.get_num_threads(),
        "framework": framework, "plain": plain, "tuned": tuned, "framework_over_plain": ratio,
        "framework_over_tuned": tuned_ratio,
    }
    if len(repeats) > 1:
        report["repeats"], report["median"] = repeats, median_ratios(repeats)
    if plain is not None:
        precisions = {"32-true", report["precision"]}
        peaks = {p: plain_loop.matmul_peak(device_of(cfg), plain_loop.autocast_dtype(p)) for p in sorted(precisions)}
        report["flops"] = flop_rates(report, peaks)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = Path(cfg.out or Path(cfg.paths.results_dir) / "benchmarks" / f"train_{cfg.name}_{stamp}.json")
    write_json(out, report)
    print_table(f"{cfg.name}: {cfg.trainer.max_epochs} epochs, batch {cfg.data.batch_size}, {report['device']}",
                framework, plain, ratio, report, tuned, tuned_ratio, report.get("flops"))
    if len(repeats) > 1:
        print(f"median of {len(repeats)} repeats: " + ", ".join(f"{key} {value:.3f}x" for key, value in report["median"].items()))
    print(f"Wrote {out}")
    return report
