"""``hyp.freeze_backbone_epochs``: the backbone frozen for the first epochs of a fine-tuning run, then trained."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BaseFinetuning
from torch import nn
from torch.optim import Optimizer

from pipeline.modules.init_weights import backbone_module


class FreezeBackbone(BaseFinetuning):
    """The task's backbone (``backbone_module(task.net)``) frozen for ``epochs`` epochs, then trained.

    Its parameters are in the optimiser from the start (``pipeline.trainers.base.parameter_groups``): while frozen they
    get no gradient, so no step, no weight decay and no optimiser state; unfreezing adds no param group,
    so a resumed run rebuilds exactly the optimiser it saved. While frozen its BatchNorm layers stay in
    eval mode (Lightning puts the model in train mode at each epoch and after validation), so their
    running statistics are the loaded ones and the batch does not change them.

    Under DDP (more than one process) the backbone is not frozen through ``requires_grad``: DDP wraps the model
    after this callback's ``setup`` and registers only the parameters that require a gradient then, so a
    backbone unfrozen later would train without its gradients being averaged across processes (each rank's
    weights drifting apart, silently). There the backbone stays in DDP's graph (every parameter used, so no
    ``find_unused_parameters``) and its gradients, averaged as usual, are dropped before each optimiser step
    while frozen (before gradient clipping, which so sees what it sees in one process): the same updates as
    ``requires_grad=False``, at the cost of the backbone's backward pass during the frozen epochs.
    """

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs
        self.in_ddp_graph = False  # several processes: frozen by dropping gradients, not by requires_grad

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.in_ddp_graph = trainer.world_size > 1
        super().setup(trainer, pl_module, stage)

    @staticmethod
    def backbone(pl_module: pl.LightningModule) -> nn.Module:
        return backbone_module(pl_module.net)

    def freeze_before_training(self, pl_module: pl.LightningModule) -> None:
        if not self.in_ddp_graph:
            self.freeze(self.backbone(pl_module), train_bn=False)

    def finetune_function(self, pl_module: pl.LightningModule, epoch: int, optimizer: Optimizer) -> None:
        if epoch >= self.epochs:
            self.make_trainable(self.backbone(pl_module))
            # Lightning's validation loop restores the modes it found (eval, while frozen): train mode again,
            # as a resumed run's freshly built model has it
            self.backbone(pl_module).train(pl_module.training)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer) -> None:
        if self.in_ddp_graph and trainer.current_epoch < self.epochs:
            for param in self.backbone(pl_module).parameters():
                param.grad = None

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if trainer.current_epoch < self.epochs:
            for module in self.backbone(pl_module).modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    # No param groups are ever added, so there is nothing to restore; Lightning's own restore would put back
    # the learning rates stored at the first epoch over the resumed optimiser's.
    def state_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restarting = False
