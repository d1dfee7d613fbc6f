"""Epoch-level metrics of the siamese task equal sklearn's over all predictions of the epoch."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from conftest import TINY_SIAMESE, compose_config
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score

from pipeline.delivery.answers import PairScores
from pipeline.delivery.backend import TorchBackend
from pipeline.trainers.engine import build_datamodule, build_task


@pytest.fixture(scope="module")
def validated(tmp_path_factory):
    cfg = compose_config(TINY_SIAMESE, tmp_path_factory.mktemp("run"))
    datamodule = build_datamodule(cfg)
    task = build_task(cfg, datamodule.info)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False)
    # An untrained model gives varied, imperfect scores: the metrics are non-trivial.
    logged = trainer.validate(task, datamodule=datamodule)[0]
    task.eval()
    backend = TorchBackend(task.export_spec())
    probs, labels = [], []
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            probs.append(PairScores.of(backend, batch, {}).scores)
            labels.append(batch["label"])
    return logged, torch.cat(probs).numpy(), torch.cat(labels).numpy().astype(int)


def test_metrics_match_sklearn(validated):
    logged, probs, labels = validated
    hard = (probs >= 0.5).astype(int)
    expected = {
        "val/acc": accuracy_score(labels, hard),
        "val/precision": precision_score(labels, hard, zero_division=0),
        "val/recall": recall_score(labels, hard, zero_division=0),
        "val/f1": f1_score(labels, hard, zero_division=0),
        "val/auroc": roc_auc_score(labels, probs),
    }
    for key, value in expected.items():
        assert logged[key] == pytest.approx(value, abs=1e-5), key


def test_auroc_is_not_a_mean_of_batch_values(validated):
    logged, probs, labels = validated
    batch_aucs = [roc_auc_score(labels[i:i + 32], probs[i:i + 32]) for i in range(0, len(labels), 32)
                  if 0 < labels[i:i + 32].sum() < len(labels[i:i + 32])]
    assert abs(np.mean(batch_aucs) - logged["val/auroc"]) > 1e-6
