"""What the TensorBoard dashboards open on: a Custom Scalars layout (train vs val of each loss and
metric on one chart) and a short, curated HPARAMS list with the best validation and test figures."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, ListConfig, OmegaConf

from pipeline.callbacks.throughput import TAGS as THROUGHPUT_TAGS
from pipeline.callbacks.throughput import Throughput

STAGE_SUFFIX = re.compile(r"^(train|val)/(.+?)(_epoch|_step)?$")
# Training figures that have no val counterpart: the learning rate (train/lr) and the speed (train/speed/*).
OPTIMISATION = re.compile(r"^train/(lr([_-].*)?|speed/.+)$")
MAX_HPARAMS = 30
# Overrides that say where a run writes, not what it trains.
NOT_HPARAMS = ("paths.", "hydra.", "resume", "trainer.default_root_dir", "data.root", "data.num_workers")  # data.root: data_root


def scalars_layout(metric_names: Iterable[str]) -> dict[str, dict[str, list]]:
    """Custom Scalars layout: one chart per loss or metric with its train and val curves, then the
    learning rates and the throughput figures."""
    names = sorted({m.group(2) for m in map(STAGE_SUFFIX.match, metric_names) if m and not OPTIMISATION.match(m.group(0))})
    # The loss first: it is the chart people look at before any other.
    names.sort(key=lambda name: name != "loss")
    curves = {name: ["Multiline", [f"^train/{re.escape(name)}(_epoch)?$", f"^val/{re.escape(name)}$"]] for name in names}
    layout: dict[str, dict[str, list]] = {"train vs val": curves}
    others = sorted(n for n in metric_names if OPTIMISATION.match(n))
    if others:
        layout["optimisation and speed"] = {name: ["Multiline", [f"^{re.escape(name)}$"]] for name in others}
    return layout


class Dashboard(pl.Callback):
    """After the first validation epoch (when every metric name is known), write the Custom Scalars
    layout to each logger that has ``log_layout`` (``pipeline.utils.tensorboard.DashboardLogger``)."""

    def __init__(self) -> None:
        self.written: set[str] = set()

    @rank_zero_only
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        names = set(trainer.callback_metrics) | ({"train/lr"} if len(trainer.optimizers) == 1 else
                                                 {f"train/lr_{type(o).__name__}" for o in trainer.optimizers})
        if any(isinstance(callback, Throughput) for callback in trainer.callbacks):
            names |= set(THROUGHPUT_TAGS)
        if names <= self.written:
            return
        self.written |= names
        layout = scalars_layout(self.written)
        for logger in trainer.loggers:
            if hasattr(logger, "log_layout"):
                logger.log_layout(layout)


def _class_name(node: Any) -> str:
    """``torch.optim.AdamW`` -> ``AdamW``; no node -> ``none``."""
    if not node or "_target_" not in node:
        return "none"
    return str(node["_target_"]).rsplit(".", 1)[-1]


def _plain_value(value: Any) -> int | float | str | bool:
    """A value TensorBoard's HPARAMS accepts: numbers, strings and booleans; anything else as text."""
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, ListConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, list | tuple):
        return "x".join(map(str, value))
    return str(value)


def curated_hparams(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, int | float | str | bool]:
    """The settings a person compares runs by (experiment, backbone, image size, batch size, optimiser,
    lr, scheduler, loss, epochs, precision, seed, data root), then every other command-line override (what a sweep
    varies), at most ``MAX_HPARAMS`` keys."""
    hyp, model, data, trainer = (cfg.get(group, {}) for group in ("hyp", "model", "data", "trainer"))
    optimizer = hyp.get("optimizer") or {}
    params: dict[str, Any] = {
        "experiment": cfg.get("name"),
        "backbone": model.get("backbone") or _class_name(model),
        "image_size": data.get("image_size"),
        "batch_size": hyp.get("batch_size"),
        "optimizer": _class_name(optimizer),
        "lr": optimizer.get("lr"),
        "weight_decay": optimizer.get("weight_decay"),
        "scheduler": _class_name(hyp.get("scheduler")),
        "loss": _class_name(hyp.get("loss")),
        "epochs": trainer.get("max_epochs"),
        "precision": trainer.get("precision"),
        "seed": cfg.get("seed"),
        # Where the data came from (null: the generated synthetic set).
        "data_root": str(data.get("root")) if data.get("root") else "synthetic",
    }
    covered = {"experiment", "seed", "hyp.batch_size", "hyp.optimizer.lr", "hyp.optimizer.weight_decay",
               "trainer.max_epochs", "trainer.precision", "model.backbone", "data.image_size", "name"}
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key in covered or key.startswith(NOT_HPARAMS) or len(params) >= MAX_HPARAMS:
            continue
        selected = OmegaConf.select(cfg, key, default=None)
        params[key] = value if selected is None or isinstance(selected, DictConfig) else selected
    return {key: _plain_value(value) for key, value in params.items() if value is not None}


def headline_metrics(results: dict[str, Any], best_row: dict[str, Any] | None) -> dict[str, float]:
    """HPARAMS metrics, under the tags of their own stage so Time Series gets no extra group: the best
    monitored value (``val/best_f1``) and its epoch (``val/best_epoch``), and the test figures (already
    logged as ``test/*``, ``z_test/*`` in the trackers; ``DashboardLogger`` does not write them twice)."""
    metrics: dict[str, float] = {}
    best = results.get("best")
    if best:
        stage, _, name = best["monitor"].rpartition("/")
        metrics[f"{stage or 'val'}/best_{name}"] = best["score"]
        if best_row:
            metrics[f"{stage or 'val'}/best_epoch"] = best_row["epoch"]
    metrics.update({key: value for key, value in results.get("test", {}).items() if value is not None})
    return metrics
