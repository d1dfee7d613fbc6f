"""Epoch-level metrics of the siamese task equal sklearn's over all predictions of the epoch."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from conftest import TINY_SIAMESE, compose_config
from PIL import Image
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, roc_auc_score, roc_curve

from pipeline.callbacks.curves import VerificationCurves
from pipeline.delivery.answers import PairScores
from pipeline.delivery.backend import TorchBackend
from pipeline.runs.run import build_datamodule, build_task


@pytest.fixture(scope="module")
def validated(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    cfg = compose_config(TINY_SIAMESE, run)
    datamodule = build_datamodule(cfg)
    task = build_task(cfg, datamodule.info)
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         callbacks=[VerificationCurves(str(run / "results"))])
    # An untrained model gives varied, imperfect scores: the metrics are non-trivial.
    logged = trainer.validate(task, datamodule=datamodule)[0]
    task.eval()
    backend = TorchBackend(task.export_spec())
    probs, labels = [], []
    with torch.no_grad():
        for batch in datamodule.val_dataloader():
            probs.append(PairScores.of(backend, batch, {}).scores)
            labels.append(batch["label"])
    return logged, torch.cat(probs).numpy(), torch.cat(labels).numpy().astype(int), run


def test_roc_det_figure_marks_sklearns_eer_point(validated):
    *_, probs, labels, run = validated
    fpr, tpr, thresholds = roc_curve(labels, probs, drop_intermediate=False)
    i = int(np.argmin(np.abs((1 - tpr) - fpr)))
    info = Image.open(run / "results" / "val_roc_det.png").info
    assert info["Title"] == "val (epoch 0)"
    assert f"pairs: EER {(fpr[i] + 1 - tpr[i]) / 2:.4f} at {thresholds[i]:.4f}" in info["Description"]


def test_metrics_match_sklearn(validated):
    logged, probs, labels, _ = validated
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
    logged, probs, labels, _ = validated
    batch_aucs = [roc_auc_score(labels[i:i + 32], probs[i:i + 32]) for i in range(0, len(labels), 32)
                  if 0 < labels[i:i + 32].sum() < len(labels[i:i + 32])]
    assert abs(np.mean(batch_aucs) - logged["val/auroc"]) > 1e-6
