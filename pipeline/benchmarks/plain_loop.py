"""The reference the framework's training is measured against: a plain PyTorch loop that decodes
every image once into tensors, no Lightning, no DataLoader.

It takes from the framework only what defines the experiment: the split (the datamodule's
datasets), the deterministic preprocessing (each split's ``prepare`` step and eval transform), the
network and loss (``build_task``: the model factory and ``model_step``), the optimiser and learning
rate schedule (``build_optimizers``), batch size and epochs. Augmentation is a random horizontal
flip of the tensors. Each epoch is validated, the best validation accuracy's weights are tested,
as the framework's checkpoint selection does. Classification datamodules only.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch

from pipeline.data.cache import decode
from pipeline.data.classification import ClassificationDataset
from pipeline.data.transforms import apply_transform


def supports(datamodule: Any) -> bool:
    """True for datamodules the plain loop can stand in for (labelled image files, one label per head)."""
    return all(isinstance(ds, ClassificationDataset) for ds in datamodule.datasets.values())


def decode_split(dataset: ClassificationDataset, transform) -> dict[str, torch.Tensor]:
    """Every image of ``dataset`` decoded and preprocessed once, stacked, with its labels."""
    images = [apply_transform(transform, decode(s.path, s.box, dataset.prepare)) for s in dataset.samples]
    labels = {key: torch.tensor([s.labels[key] for s in dataset.samples]) for key in dataset.samples[0].labels}
    return {"image": torch.stack(images), **labels}


def batches(data: dict[str, torch.Tensor], batch_size: int, order: torch.Tensor, drop_last: bool):
    """Batches of ``data`` in ``order``; the last, smaller one dropped when ``drop_last``."""
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    for start in range(0, stop, batch_size):
        index = order[start : start + batch_size]
        yield {key: value[index] for key, value in data.items()}


@torch.no_grad()
def accuracy(task, data: dict[str, torch.Tensor], batch_size: int, device: torch.device) -> float:
    """Share of items whose main output is right."""
    task.eval()
    correct = 0
    for batch in batches(data, batch_size, torch.arange(len(data["image"])), drop_last=False):
        preds, target = task.model_step(to_device(batch, device))["pairs"][task.main_output()]
        correct += int((preds == target).sum())
    return correct / len(data["image"])


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def run_plain(task, datamodule, epochs: int, device: torch.device, seed: int, start: float | None = None) -> dict[str, Any]:
    """Decode once, train ``epochs`` epochs, test the best validation epoch; wall time (from ``start``,
    a ``time.perf_counter()`` value, default now) and rates."""
    start = time.perf_counter() if start is None else start
    eval_transform = datamodule.datasets["val"].transform
    data = {split: decode_split(datamodule.datasets[split], eval_transform) for split in ("train", "val", "test")}
    task.to(device)
    size, batch_size = len(data["train"]["image"]), datamodule.batch_size
    drop_last = size > batch_size
    steps_per_epoch = size // batch_size if drop_last else -(-size // batch_size)
    optimizers = task.build_optimizers(lambda: epochs * steps_per_epoch)
    optimizer, schedule = (optimizers["optimizer"], optimizers["lr_scheduler"]) if isinstance(optimizers, dict) else (optimizers, None)
    generator = torch.Generator().manual_seed(seed)
    best, best_state, clock = -1.0, None, {"samples": 0, "wait_s": 0.0, "compute_s": 0.0}
    for _ in range(epochs):
        train_epoch(task, data["train"], batch_size, drop_last, optimizer, schedule, generator, device, clock)
        if schedule and schedule["interval"] == "epoch":
            schedule["scheduler"].step()
        val_acc = accuracy(task, data["val"], datamodule.eval_batch_size, device)
        if val_acc > best:
            best, best_state = val_acc, copy.deepcopy(task.state_dict())
    wall_s = time.perf_counter() - start
    task.load_state_dict(best_state)
    return {**rates(clock, wall_s), "test_acc": accuracy(task, data["test"], datamodule.eval_batch_size, device)}


def train_epoch(task, data, batch_size, drop_last, optimizer, schedule, generator, device, clock) -> None:
    """One epoch: shuffle, flip half the images, forward, loss, backward, step (timed as the framework's
    throughput callback times it: no per-step synchronisation, the queue drained at the end)."""
    task.train()
    mark = time.perf_counter()
    for batch in batches(data, batch_size, torch.randperm(len(data["image"]), generator=generator), drop_last):
        flip = torch.rand(len(batch["image"]), generator=generator) < 0.5
        batch["image"][flip] = batch["image"][flip].flip(-1)
        batch = to_device(batch, device)
        ready = time.perf_counter()
        loss = task.model_step(batch)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if schedule and schedule["interval"] == "step":
            schedule["scheduler"].step()
        done = time.perf_counter()
        clock["wait_s"] += ready - mark
        clock["compute_s"] += done - ready
        clock["samples"] += len(batch["image"])
        mark = done
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        clock["compute_s"] += time.perf_counter() - mark


def rates(clock: dict[str, float], wall_s: float) -> dict[str, float]:
    """Training samples/s and the share of the training time spent waiting for data."""
    busy = clock["wait_s"] + clock["compute_s"]
    return {"wall_s": wall_s, "train_samples_per_sec": clock["samples"] / busy if busy else 0.0,
            "data_wait_share": clock["wait_s"] / busy if busy else 0.0}
