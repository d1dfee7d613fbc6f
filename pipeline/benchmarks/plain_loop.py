"""The reference the framework's training is measured against: a plain PyTorch loop that decodes
every image once into tensors, no Lightning, no DataLoader.

It takes from the framework only what defines the experiment: the split (the datamodule's
datasets), the deterministic preprocessing (each split's ``prepare`` step and eval transform), the
network and loss (``build_task``: the model factory and ``model_step``), the optimiser and learning
rate schedule (``build_optimizers``), batch size and epochs. Training images are decoded once too, and
each epoch augments them with the training split's own transform (the data config's ``augment``, then
normalisation), item by item as they are batched, as the framework's data loader does. Each epoch is
validated, the best validation accuracy's weights are tested, as the framework's checkpoint selection
does. Classification datamodules only.

Two forms: the plain loop proper (fp32, NCHW: the loop a user writes first) and the tuned loop, the same
loop with the framework's precision and memory format (``autocast``: bfloat16 autocast around the forward
pass and loss as Lightning's ``bf16-mixed`` does, float16 with a gradient scaler for ``16-mixed``;
``channels_last``: the network's weights and its input batches in NHWC, done by the task's ``setup`` as in
the framework). ``step_flops`` counts one training step's floating point operations and ``matmul_peak``
measures the device's matrix-multiply rate in a precision, for the achieved share of peak.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from typing import Any

import numpy as np
import torch

from pipeline.data.cache import decode
from pipeline.data.classification import ClassificationDataset
from pipeline.data.transforms import apply_transform
from pipeline.trainers.base import build_optimizers


def supports(datamodule: Any) -> bool:
    """True for datamodules the plain loop can stand in for (labelled image files, one label per head)."""
    return all(isinstance(ds, ClassificationDataset) for ds in datamodule.datasets.values())


def decode_images(dataset: ClassificationDataset) -> list[np.ndarray]:
    """Every image of ``dataset`` decoded and prepared (resized) once: uint8 HxWx3."""
    return [decode(s.path, s.box, dataset.prepare) for s in dataset.samples]


def labels_of(dataset: ClassificationDataset) -> dict[str, torch.Tensor]:
    return {key: torch.tensor([s.labels[key] for s in dataset.samples]) for key in dataset.samples[0].labels}


def decode_split(dataset: ClassificationDataset, transform) -> dict[str, torch.Tensor]:
    """Every image of ``dataset`` decoded and preprocessed once, stacked, with its labels."""
    images = [apply_transform(transform, image) for image in decode_images(dataset)]
    return {"image": torch.stack(images), **labels_of(dataset)}


def augmented_batches(images: list[np.ndarray], labels: dict[str, torch.Tensor], transform, batch_size: int,
                      order: torch.Tensor, drop_last: bool):
    """Batches of ``images`` in ``order``, each item through ``transform`` (random: new each epoch)."""
    for index in batches({"index": order}, batch_size, torch.arange(len(order)), drop_last):
        chosen = index["index"]
        yield {"image": torch.stack([apply_transform(transform, images[i]) for i in chosen.tolist()]),
               **{key: value[chosen] for key, value in labels.items()}}


def batches(data: dict[str, torch.Tensor], batch_size: int, order: torch.Tensor, drop_last: bool):
    """Batches of ``data`` in ``order``; the last, smaller one dropped when ``drop_last``."""
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    for start in range(0, stop, batch_size):
        index = order[start : start + batch_size]
        yield {key: value[index] for key, value in data.items()}


AUTOCAST = {"32-true": None, "32": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def autocast_dtype(precision: str) -> torch.dtype | None:
    """The autocast dtype of a resolved ``trainer.precision`` (None: fp32)."""
    if precision not in AUTOCAST:
        raise ValueError(f"trainer.precision={precision}: the plain loop runs {', '.join(AUTOCAST)}")
    return AUTOCAST[precision]


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` in ``dtype`` on ``device``; nothing for fp32."""
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


@torch.no_grad()
def accuracy(task, data: dict[str, torch.Tensor], batch_size: int, device: torch.device,
             dtype: torch.dtype | None = None) -> float:
    """Share of items whose main output is right."""
    task.eval()
    correct = 0
    for batch in batches(data, batch_size, torch.arange(len(data["image"])), drop_last=False):
        with autocast(device, dtype):
            out = task.model_step(to_device(batch, device))
        preds, target = out["pairs"][task.heads.main]
        correct += int((preds == target).sum())
    return correct / len(data["image"])


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def run_plain(task, datamodule, epochs: int, device: torch.device, seed: int, start: float | None = None,
              dtype: torch.dtype | None = None, cpu_start: float | None = None, pause=None) -> dict[str, Any]:
    """Decode once, train ``epochs`` epochs (autocast in ``dtype``; None: fp32), test the best validation
    epoch; wall time (from ``start``, a ``time.perf_counter()`` value, default now) and CPU time (from ``cpu_start``,
    a ``time.process_time()`` value), rates, the phases the framework's run also reports (before the first training
    step, validation with the copy of the best weights, after the last epoch: nothing) and the FLOPs of one training
    step per item. ``pause()``, where given, is called before the middle batch of each epoch (the benchmark hands the
    machine to its other sides there, as the framework's side does); the seconds it returns are left out of the wall
    time and of the data wait."""
    start = time.perf_counter() if start is None else start
    cpu_start = time.process_time() if cpu_start is None else cpu_start
    eval_transform, train_set = datamodule.datasets["val"].transform, datamodule.datasets["train"]
    data = {split: decode_split(datamodule.datasets[split], eval_transform) for split in ("val", "test")}
    data["train"] = {"images": decode_images(train_set), "labels": labels_of(train_set), "transform": train_set.transform}
    task.to(device)
    size, batch_size = len(data["train"]["images"]), datamodule.batch_size
    drop_last = size > batch_size
    steps_per_epoch = batch_count(size, batch_size, drop_last)
    optimizers = build_optimizers(task, lambda: epochs * steps_per_epoch)
    optimizer, schedule = (optimizers["optimizer"], optimizers["lr_scheduler"]) if isinstance(optimizers, dict) else (optimizers, None)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    generator = torch.Generator().manual_seed(seed)
    best, best_state, clock = -1.0, None, {"samples": 0, "wait_s": 0.0, "compute_s": 0.0}
    step = {"optimizer": optimizer, "schedule": schedule, "dtype": dtype, "scaler": scaler}
    phases = {"before_training_s": time.perf_counter() - start, "validation_s": 0.0}
    for _ in range(epochs):
        # the benchmark's other sides ran in the pause (``Turns``): not this loop's time
        start += train_epoch(task, data["train"], batch_size, drop_last, step, generator, device, clock, pause)
        if schedule and schedule["interval"] == "epoch":
            schedule["scheduler"].step()
        validating = time.perf_counter()
        val_acc = accuracy(task, data["val"], datamodule.eval_batch_size, device, dtype)
        if val_acc > best:
            best, best_state = val_acc, copy.deepcopy(task.state_dict())
        phases["validation_s"] += time.perf_counter() - validating
    end, cpu_s = time.perf_counter(), time.process_time() - cpu_start
    task.load_state_dict(best_state)
    first = next(augmented_batches(**data["train"], batch_size=batch_size, order=torch.arange(size), drop_last=drop_last))
    return {**rates(clock, end - start, cpu_s), **phases, "after_training_s": 0.0,
            "test_acc": accuracy(task, data["test"], datamodule.eval_batch_size, device, dtype),
            "step_flops_per_item": step_flops(task, to_device(first, device), device, dtype) / len(first["image"])}


def step_flops(task, batch: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype | None) -> int:
    """Floating point operations of one training step on ``batch`` (forward, loss, backward), counted by
    ``torch.utils.flop_counter.FlopCounterMode`` on a copy of the task (the task itself is left as it is)."""
    from torch.utils.flop_counter import FlopCounterMode

    probe = copy.deepcopy(task).train()
    counter = FlopCounterMode(display=False)
    with counter:
        with autocast(device, dtype):
            loss = probe.model_step(batch)["loss"]
        loss.backward()
    return int(counter.get_total_flops())


def matmul_peak(device: torch.device, dtype: torch.dtype | None, size: int | None = None, seconds: float = 1.0) -> float:
    """The device's measured matrix-multiply rate (FLOP/s) in ``dtype`` (None: fp32): square products of
    ``size`` (default 4096 on CUDA, 1024 on CPU) repeated for about ``seconds``, after a warm-up."""
    size = size or (4096 if device.type == "cuda" else 1024)
    a = torch.randn(size, size, device=device, dtype=dtype or torch.float32)
    b = torch.randn(size, size, device=device, dtype=dtype or torch.float32)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    torch.matmul(a, b)
    sync()
    count, begin = 0, time.perf_counter()
    while True:
        torch.matmul(a, b)
        count += 1
        sync()
        elapsed = time.perf_counter() - begin
        if elapsed >= seconds:
            return 2 * size**3 * count / elapsed


def train_epoch(task, data, batch_size, drop_last, step, generator, device, clock, pause=None) -> float:
    """One epoch: shuffle, augment, forward, loss, backward, step (timed as the framework's throughput
    callback times it: no per-step synchronisation, the queue drained at the end; augmenting is data wait).
    ``pause()``, where given, before the middle batch (as the framework's ``Pause``); returns the seconds it waited."""
    task.train()
    mark, waited = time.perf_counter(), 0.0
    order = torch.randperm(len(data["images"]), generator=generator)
    middle = middle_batch(batch_count(len(order), batch_size, drop_last))
    for index, batch in enumerate(augmented_batches(**data, batch_size=batch_size, order=order, drop_last=drop_last)):
        if pause is not None and index == middle:
            paused = pause()
            mark, waited = mark + paused, waited + paused
        batch = to_device(batch, device)
        ready = time.perf_counter()
        with autocast(device, step["dtype"]):
            loss = task.model_step(batch)["loss"]
        step["optimizer"].zero_grad(set_to_none=True)
        if step["scaler"] is None:
            loss.backward()
            step["optimizer"].step()
        else:
            step["scaler"].scale(loss).backward()
            step["scaler"].step(step["optimizer"])
            step["scaler"].update()
        if step["schedule"] and step["schedule"]["interval"] == "step":
            step["schedule"]["scheduler"].step()
        done = time.perf_counter()
        clock["wait_s"] += ready - mark
        clock["compute_s"] += done - ready
        clock["samples"] += len(batch["image"])
        mark = done
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        clock["compute_s"] += time.perf_counter() - mark
    return waited


def batch_count(size: int, batch_size: int, drop_last: bool) -> int:
    """Batches an epoch of ``size`` items gives (``batches``): the last, smaller one dropped when ``drop_last``."""
    return size // batch_size if drop_last else -(-size // batch_size)


def middle_batch(batches: float) -> int:
    """The batch before which an epoch of ``batches`` batches hands the machine over (the first of its second half);
    the first where the count is unknown."""
    return int(batches) // 2 if math.isfinite(batches) else 0


def rates(clock: dict[str, float], wall_s: float, cpu_s: float | None = None) -> dict[str, float]:
    """Training samples/s and the share of the training time spent waiting for data; with ``cpu_s`` (the process's
    CPU seconds over the same span as ``wall_s``, all its threads) also that and the cores it kept busy on average,
    which other processes on a shared machine change less than the wall time."""
    busy = clock["wait_s"] + clock["compute_s"]
    out = {"wall_s": wall_s, "train_samples_per_sec": clock["samples"] / busy if busy else 0.0,
           "data_wait_share": clock["wait_s"] / busy if busy else 0.0}
    if cpu_s is not None:
        out.update(cpu_s=cpu_s, busy_cores=cpu_s / wall_s if wall_s else 0.0)
    return out
