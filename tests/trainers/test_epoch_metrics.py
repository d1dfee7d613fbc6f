"""The epoch metrics a training logs cover every step of the epoch, though the metric objects are logged once an epoch."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from conftest import compose_config
from sklearn.metrics import f1_score

from pipeline.runs.run import build_datamodule, build_task
from pipeline.trainers.engine import build_trainer

TINY_FOLDER = ["experiment=image_folder", "data.image_size=[32,32]", "data.synthetic.num_people=20",
               "data.synthetic.image_size=[32,24]", "data.num_workers=0", "hyp.batch_size=8"]


class StageReset(pl.Callback):
    """Empties a stage's records when its epoch starts, so that they hold the last epoch's steps."""

    def __init__(self, records: dict[str, list]) -> None:
        self.records = records

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.records["train"].clear()

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self.records["val"].clear()


def test_epoch_metrics_cover_every_step_and_log_once_a_step(tmp_path, data_dir):
    cfg = compose_config(TINY_FOLDER, tmp_path / "run", data_dir)
    datamodule = build_datamodule(cfg)
    task = build_task(cfg, datamodule.info)
    records: dict[str, list] = {"train": [], "val": []}
    calls: dict[str, int] = {"train": 0}
    step, log = task.model_step, task.log

    def recording_step(batch):
        out = step(batch)
        preds, target = out["pairs"]["label"]
        records["train" if task.training else "val"].append((preds, target, float(out["loss"].detach())))
        return out

    def counting_log(name, *args, **kwargs):
        if name.startswith("train/") and task.training:
            calls["train"] += 1
        return log(name, *args, **kwargs)

    task.model_step, task.log = recording_step, counting_log
    trainer = build_trainer(cfg, callbacks=[StageReset(records)], max_epochs=2, limit_train_batches=4,
                            limit_val_batches=3, num_sanity_val_steps=1, logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(task, datamodule=datamodule)

    assert len(records["train"]) == 4 and len(records["val"]) == 3
    logged = {key: float(value) for key, value in trainer.callback_metrics.items()}
    for stage in ("train", "val"):
        preds = torch.cat([p for p, _, _ in records[stage]]).numpy()
        target = torch.cat([t for _, t, _ in records[stage]]).numpy()
        assert logged[f"{stage}/acc"] == pytest.approx((preds == target).mean(), abs=1e-6)
        assert logged[f"{stage}/f1"] == pytest.approx(f1_score(target, preds, average="macro"), abs=1e-6)
    sizes = np.array([len(t) for _, t, _ in records["val"]])
    losses = np.array([loss for _, _, loss in records["val"]])
    assert logged["val/loss"] == pytest.approx((losses * sizes).sum() / sizes.sum(), rel=1e-5)
    # train/loss each step (its curve), the train metric objects once in each of the 2 epochs
    assert calls["train"] == 2 * 4 + 2 * 2
