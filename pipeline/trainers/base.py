"""BaseTask: the LightningModule skeleton every task family shares.

A task subclass builds its network (``build_net``), its epoch-level metrics (``build_metrics``) and
one ``model_step`` used by training, validation and test. Optimiser and scheduler come from
``hyp.optimizer`` / ``hyp.scheduler`` as ``_partial_`` configs completed here.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn as nn
from hydra.utils import instantiate
from lightning.pytorch.plugins.precision import MixedPrecision
from omegaconf import DictConfig, OmegaConf
from torch.optim.optimizer import _device_dtype_check_for_fused
from torchmetrics import MeanMetric, MetricCollection

from pipeline.callbacks.finetune import FreezeBackbone
from pipeline.callbacks.image_grid import ExampleSampler, item_at
from pipeline.delivery.answers import ExportSpec
from pipeline.modules.init_weights import backbone_module
from pipeline.utils.allocator import keep_freed_memory
from pipeline.utils.contracts import DataInfo
from pipeline.utils.errors import UserError

log = logging.getLogger(__name__)

STAGES = ("train", "val", "test")


def _plain(node: DictConfig | dict) -> dict:
    """A resolved plain-dict copy of a config node."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)


def item_mean() -> MeanMetric:
    """A mean over items, each batch's value weighted by its size; a NaN value shows as NaN. (torchmetrics'
    ``nan_strategy="disable"`` would also drop the weights: a mean of batch means.)"""
    return MeanMetric(nan_strategy=float("nan"))


def build_model(model: DictConfig, **arguments: Any) -> nn.Module:
    """The model group's ``_target_`` built by Hydra from its keys (but the ``init_*`` start-from keys, which
    ``pipeline.trainers.init_from`` reads) and the task's ``arguments`` (what the data decides)."""
    return instantiate({key: value for key, value in model.items() if not str(key).startswith("init_")}, **arguments)


def first_items(values: dict[str, Any], n: int, prefix: str = "") -> dict[str, Any]:
    """The first ``n`` items (on CPU) of every batched tensor, or list of tensor dicts, in ``values``."""
    kept = {}
    for key, value in values.items():
        if isinstance(value, torch.Tensor) and value.ndim:
            kept[prefix + key] = value[:n].detach().cpu()
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            kept[prefix + key] = [{k: v.detach().cpu() for k, v in item.items()} for item in value[:n]]
    return kept


def keep_examples(task: BaseTask, stage: str, batch: dict[str, Any], out: dict[str, Any], batch_idx: int, size: int) -> None:
    """``task.examples[stage]``: items of the batch and (as out_<key>) of the step's outputs, for render_examples'
    grids. A task with ``example_classes(batch, out)`` (the classes each item shows) gets ``example_count`` of
    them sampled across the classes of the whole epoch (``ExampleSampler``); others the first items."""
    classes = task.example_classes(batch, out) if hasattr(task, "example_classes") else None
    if classes is None:
        if batch_idx == 0:
            task.examples[stage] = {**first_items(batch, task.example_count), **first_items(out, task.example_count, "out_")}
        return
    if batch_idx == 0 or stage not in task.samplers:
        task.samplers[stage] = ExampleSampler(task.example_count)
    sampler = task.samplers[stage]
    if sampler.offer(classes, lambda i: {**item_at(batch, i, size), **item_at(out, i, size, "out_")}):
        task.examples[stage] = sampler.batch()


def parameter_groups(task: BaseTask) -> list[torch.nn.Parameter] | list[dict[str, Any]]:
    """The trainable parameters, or with ``hyp.backbone_lr_mult`` / ``freeze_backbone_epochs`` two groups: the
    rest, and the whole backbone (frozen or not: unfreezing adds no group) at the learning rate times the multiplier."""
    mult = float(task.hyp.get("backbone_lr_mult", 1.0))
    if mult == 1.0 and not task.hyp.get("freeze_backbone_epochs"):
        return [p for p in task.parameters() if p.requires_grad]
    backbone = list(backbone_module(task.net).parameters())
    inside = {id(p) for p in backbone}
    rest = [p for p in task.parameters() if p.requires_grad and id(p) not in inside]
    return [group for group in ({"params": rest}, {"params": backbone, "lr_mult": mult}) if group["params"]]


def unfused_because(trainer: pl.Trainer | None) -> str | None:
    """Why ``hyp.optimizer.fused`` cannot hold under ``trainer`` (None: it can): Lightning clips gradients under mixed
    precision only with an optimiser that leaves their unscaling to it, which a fused one does not."""
    if trainer is None or not trainer.gradient_clip_val or not isinstance(trainer.precision_plugin, MixedPrecision):
        return None
    return f"trainer.gradient_clip_val={trainer.gradient_clip_val} under trainer.precision={trainer.precision}"


def build_optimizer(options: DictConfig, params: list, trainer: pl.Trainer | None = None) -> torch.optim.Optimizer:
    """``hyp.optimizer`` (a ``_partial_`` torch optimiser) over ``params``. ``fused: true`` (the AdamW and SGD groups)
    updates every tensor in one kernel: 5 ms instead of 15 per step for a resnet18 with AdamW on 2 CPU cores, and the
    fastest way on GPUs; off, with a log line, where ``trainer`` clips gradients under mixed precision
    (``unfused_because``). An optimiser that does not take a key, or a device without fused kernels, is a UserError
    naming the key."""
    reason = unfused_because(trainer) if options.get("fused") else None
    if reason:
        log.info("hyp.optimizer.fused: off for %s (Lightning unscales the gradients before clipping them)", reason)
    try:
        optimizer = instantiate(options)(params=params, **({"fused": False} if reason else {}))
    except TypeError as exc:
        key = next((k for k in options if f"argument '{k}'" in str(exc)), None)
        if key is None:
            raise
        raise UserError(f"hyp.optimizer.{key}: {options._target_} does not take '{key}'; remove it with "
                        f"'~hyp.optimizer.{key}'") from None
    fused = [p for group in optimizer.param_groups for p in group["params"]] if optimizer.defaults.get("fused") else []
    for param in fused:
        try:
            _device_dtype_check_for_fused(param)  # what torch checks at the first step, here before training starts
        except RuntimeError:
            raise UserError(f"hyp.optimizer.fused: no fused kernels on {param.device.type} for {param.dtype} "
                            f"parameters; pass hyp.optimizer.fused=false") from None
    return optimizer


def build_optimizers(task: BaseTask, total_steps):
    """``hyp.optimizer`` and ``hyp.scheduler`` for the task's network; ``total_steps()`` gives the optimiser
    steps of the whole run (asked only for ``total_steps: auto``). Also used by the plain benchmark loop."""
    optimizer = build_optimizer(task.hyp.optimizer, parameter_groups(task), task._trainer)
    for group in optimizer.param_groups:
        group["lr"] = optimizer.defaults["lr"] * group.pop("lr_mult", 1.0)
    if not task.hyp.get("scheduler"):
        return optimizer
    options = OmegaConf.to_container(task.hyp.scheduler, resolve=True)
    per_group = {}
    if len(optimizer.param_groups) > 1 and isinstance(options.get("max_lr"), (int, float)):
        # OneCycleLR sets every group to max_lr: keep the backbone's multiplier (a plain list, not a ListConfig)
        max_lr = options.pop("max_lr")
        per_group["max_lr"] = [max_lr * g["lr"] / optimizer.defaults["lr"] for g in optimizer.param_groups]
    interval = options.pop("interval", "epoch")
    if options.get("total_steps") == "auto":
        # OneCycleLR divides by its warm-up length: very short runs (debug=limit) need a floor.
        options["total_steps"] = max(int(total_steps()), 20)
    scheduler = instantiate(options)(optimizer=optimizer, **per_group)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": interval}}


def log_objects(task: BaseTask, stage: str, metrics: MetricCollection | None, batch_idx: int) -> None:
    """Log each of a stage's metric objects (``metrics`` and the val/test loss means) once an epoch, at the first step
    that has it. Lightning keeps the reference, computes it at the epoch's end (synced across processes) and resets
    it, so the later steps' updates count the same; a ``self.log`` call costs ~0.8 ms, two or three a step: 4% of a
    small CNN's training step on 32 px images on 2 CPU cores. An epoch starts at batch 0 or, resumed in its
    middle, at a new epoch."""
    epoch = task._trainer.current_epoch if task._trainer is not None else None  # None: steps called by hand
    seen, logged = task.logged_objects.get(stage, (None, set()))
    if batch_idx == 0 or seen != epoch:
        logged = set()
        task.logged_objects[stage] = (epoch, logged)
    means = {f"{stage}/{key.removeprefix(f'{stage}_')}": key for key in task.eval_losses if key.startswith(f"{stage}_")}
    objects = {**{name: task.eval_losses[key] for name, key in means.items()}, **dict((metrics or {}).items())}
    for name, metric in objects.items():
        if name not in logged:
            attribute = f"eval_losses.{means[name]}" if name in means else None
            task.log(name, metric, on_step=False, on_epoch=True, prog_bar=name.endswith("/loss"), metric_attribute=attribute)
            logged.add(name)


def _to_channels_last(module: nn.Module, args: tuple) -> tuple:
    """Forward pre-hook: image batches (4-D tensors) enter the network in NHWC memory format."""
    return tuple(a.contiguous(memory_format=torch.channels_last) if isinstance(a, torch.Tensor) and a.ndim == 4 else a
                 for a in args)


class BaseTask(pl.LightningModule):
    """Shared training logic; ``model`` and ``hyp`` are the config nodes, ``data_info`` the data's description.
    Prediction and the service run the graph of ``export_spec()`` and post-process it by the record type it names
    (``pipeline.delivery.answers``): a task has no predict code of its own."""

    def __init__(
        self,
        model: DictConfig | dict,
        hyp: DictConfig | dict,
        data_info: DataInfo | dict[str, Any],
        monitor: str = "val/loss",
        monitor_mode: str = "min",
        example_count: int = 16,
    ) -> None:
        super().__init__()
        # A checkpoint's data_info is the plain dict that rebuilds it.
        self.data_info = data_info if isinstance(data_info, DataInfo) else DataInfo.from_dict(_plain(data_info))
        # Plain containers: checkpoints must load with torch.load(weights_only=True).
        self.save_hyperparameters({"model": _plain(model), "hyp": _plain(hyp), "data_info": self.data_info.to_dict(),
                                   "monitor": monitor, "monitor_mode": monitor_mode}, logger=False)
        self.model_cfg = OmegaConf.create(_plain(model))
        self.hyp = OmegaConf.create(_plain(hyp))
        self.example_count = example_count
        self.net = self.build_net()
        self.loss_fn = self.build_loss()
        # <stage>_metrics submodules, also reached as metrics[stage]
        self.metrics = {stage: self.build_metrics().clone(prefix=f"{stage}/") for stage in STAGES}
        for stage, metrics in self.metrics.items():
            setattr(self, f"{stage}_metrics", metrics)
        self.examples: dict[str, dict[str, torch.Tensor]] = {}
        self.samplers: dict[str, ExampleSampler] = {}
        self.eval_losses = nn.ModuleDict()  # <stage>_<loss name> -> MeanMetric, made at the first step
        self.logged_objects: dict[str, tuple[int | None, set[str]]] = {}  # stage -> (epoch, objects logged: ``log_objects``)

    # --- to implement per task -------------------------------------------------------------
    def build_net(self) -> nn.Module:
        raise NotImplementedError

    def build_metrics(self) -> MetricCollection:
        raise NotImplementedError

    def model_step(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        """The one required hook: return ``target`` and what ``update_metrics`` reads (``preds`` by default),
        with ``loss`` (and ``loss_<term>`` parts) whenever the step trains."""
        raise NotImplementedError

    # --- delivery: bin/export.py and bin/serve.py call this ---------------------------------------
    def export_spec(self) -> ExportSpec:
        """What to write to ONNX, and how predict and the service read its outputs (see ``ExportSpec``)."""
        raise NotImplementedError(f"{type(self).__name__} has no ONNX export")

    # --- shared ---------------------------------------------------------------------------------
    def build_loss(self) -> nn.Module:
        loss = instantiate(self.hyp.loss)
        counts = self.data_info.class_counts
        if counts is not None and hasattr(loss, "set_class_counts"):
            loss.set_class_counts(counts)
        return loss

    def update_metrics(self, stage: str, out: dict[str, Any]) -> MetricCollection | None:
        """Update the stage's metrics with a step's outputs; return those to log per step (None: the task
        logs its metrics at the epoch's end)."""
        metrics = self.metrics[stage]
        metrics.update(out["preds"], out["target"])
        return metrics

    def log_losses(self, stage: str, out: dict[str, Any], batch_size: int) -> None:
        """Log ``loss`` and every ``loss_<term>`` a step returns as ``<stage>/<name>``; val/test as the mean
        over the items of every process (a ``MeanMetric``, logged by ``log_objects``: Lightning's ``sync_dist`` mean
        divides the integer count of items by the number of processes and truncates it)."""
        for name, value in out.items():
            if not name.startswith("loss"):
                continue
            if stage == "train":
                self.log(f"train/{name}", value, on_step=True, on_epoch=True, prog_bar=name == "loss", batch_size=batch_size)
                continue
            key = f"{stage}_{name}"
            if key not in self.eval_losses:
                self.eval_losses[key] = item_mean().to(self.device)
            self.eval_losses[key].update(value.detach(), batch_size)

    def _shared_step(self, batch: dict[str, Any], batch_idx: int, stage: str) -> torch.Tensor | None:
        """``model_step`` for every stage, then the hooks: losses, metrics, cached examples."""
        out = self.model_step(batch)
        batch_size = len(out["target"])
        self.log_losses(stage, out, batch_size)
        log_objects(self, stage, self.update_metrics(stage, out), batch_idx)
        if stage != "train":
            keep_examples(self, stage, batch, out, batch_idx, batch_size)
        return out.get("loss") if stage == "train" else out  # val/test: every output, for callbacks (curves)

    def setup(self, stage: str) -> None:
        """Speed switches: ``hyp.keep_freed_memory`` (the process's allocator keeps what a step frees:
        ``pipeline.utils.allocator``), on the network ``hyp.channels_last`` (NHWC memory format, faster convolutions
        on GPUs with mixed precision) and ``hyp.compile`` (``torch.compile``, in place so the
        checkpoint keys stay those of the plain network)."""
        if getattr(self, "_speed_switches_applied", False):
            return
        self._speed_switches_applied = True
        if self.hyp.get("keep_freed_memory"):
            keep_freed_memory()
        if self.hyp.get("channels_last"):
            self.net.to(memory_format=torch.channels_last)
            self.net.register_forward_pre_hook(_to_channels_last)
        if self.hyp.get("compile"):
            self.net.compile()

    def training_step(self, batch, batch_idx):
        return self._shared_step(batch, batch_idx, "train")

    def validation_step(self, batch, batch_idx):
        return self._shared_step(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        return self._shared_step(batch, batch_idx, "test")

    def configure_optimizers(self):
        return build_optimizers(self, lambda: self.trainer.estimated_stepping_batches)

    def configure_callbacks(self) -> list[pl.Callback]:
        epochs = int(self.hyp.get("freeze_backbone_epochs", 0) or 0)
        return [FreezeBackbone(epochs)] if epochs else []
