"""Face verification robust to fakes: an embedding trained with triplet or real/fake quadruplet loss.

Validation collects every embedding of the epoch (gathered across DDP ranks), scores all pairs and
logs eer_real, eer_fake (both conventions), FNMR at FMR 1e-2/1e-3 and ROC AUC. The cosine
threshold at the val eer_real point is kept in the model's state, so the best checkpoint carries
the threshold of its own epoch; test, predict and export use that frozen threshold.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torchmetrics import MetricCollection

from pipeline.callbacks.image_grid import annotated_grid, denormalize
from pipeline.delivery.answers import Embeddings, ExportSpec, Output
from pipeline.metrics.verification import EmbeddingCollector, score_histograms, verification_metrics
from pipeline.modules.backbones import backbone_from
from pipeline.modules.metric_learning import CosineClassifier, EmbeddingNet
from pipeline.trainers.base import BaseTask
from pipeline.utils.errors import UserError

LOGGED = ("eer_real", "eer_real_fnr", "eer_fake", "eer_fake_fnr", "eer_mean", "fnmr_at_fmr_1e-2",
          "fnmr_at_fmr_1e-3", "auc_real", "auc_fake", "threshold")
AT_THRESHOLD = ("frr", "far_real", "far_fake")


class MetricLearningTask(BaseTask):
    """Backbone -> linear embedding (``model.embedding_dim``) -> L2 normalisation.

    ``hyp.loss`` is a metric-learning loss taking ``(embeddings, identity, is_fake)``;
    ``hyp.identity_head_weight`` > 0 adds a cosine identity head (Baseline++, scale
    ``hyp.identity_head_scale``) with cross-entropy on the real images.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        weight = float(self.hyp.get("identity_head_weight", 0.0))
        num_ids = self.data_info.num_identities
        self.identity_head = (
            CosineClassifier(self.net.embedding_dim, num_ids, float(self.hyp.get("identity_head_scale", 10.0)),
                             float(self.hyp.get("identity_head_margin", 0.0)))
            if weight > 0 and num_ids > 0 else None
        )
        self.identity_head_weight = weight
        # Cosine threshold at the val eer_real point; a buffer, so checkpoints carry it.
        self.register_buffer("threshold", torch.tensor(float("nan")))
        # The last val/test epoch's (stage, pair-score histograms, embeddings), for callbacks.verification_report.
        self.scored: tuple[str, dict[str, np.ndarray], dict[str, torch.Tensor]] | None = None

    # --- network and metrics -----------------------------------------------------------------
    def build_net(self) -> nn.Module:
        cfg = self.model_cfg
        backbone = backbone_from(cfg)
        return EmbeddingNet(backbone, int(cfg.get("embedding_dim", 128)), bool(cfg.get("flip_average", False)))

    def build_metrics(self) -> MetricCollection:
        return MetricCollection({"embeddings": EmbeddingCollector()})

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)

    def model_step(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        embeddings = self(batch["image"])
        identity, is_fake = batch["label"], batch["is_fake"]
        out = {"preds": embeddings, "target": identity, "is_fake": is_fake, "index": batch["index"]}
        terms = self.loss_fn.terms(embeddings, identity, is_fake)
        out.update({f"loss_{name}": value for name, value in terms.items()})
        loss = self.loss_fn.combine(terms)
        if self.identity_head is not None:
            out["loss_identity"] = self.identity_head(embeddings, identity, is_fake)
            loss = loss + self.identity_head_weight * out["loss_identity"]
        out["loss"] = loss
        return out

    def update_metrics(self, stage: str, out: dict[str, torch.Tensor]) -> None:
        """Val/test collect embeddings; the metrics are computed over the whole epoch at its end."""
        if stage != "train":
            self.metrics[stage]["embeddings"].update(out["preds"], out["target"], out["is_fake"], out["index"])

    # --- epoch ends: metrics, threshold ----------------------------------------------------
    def _epoch_results(self, stage: str, threshold: float | None) -> tuple[dict[str, float], dict[str, np.ndarray], dict[str, torch.Tensor]]:
        collector = self.metrics[stage]["embeddings"]
        epoch = {k: v.cpu() for k, v in collector.compute().items()}
        collector.reset()
        counts = score_histograms(epoch["embeddings"], epoch["identity"], epoch["is_fake"])
        if counts["positive"].sum() == 0 or counts["negative_real"].sum() == 0:
            raise UserError(f"{stage} split: needs at least two identities with two real images each to score pairs")
        return verification_metrics(epoch["embeddings"], epoch["identity"], epoch["is_fake"], threshold=threshold,
                                    counts=counts), counts, epoch

    def on_validation_epoch_end(self) -> None:
        metrics, counts, epoch = self._epoch_results("val", None)
        self.log_dict({f"val/{k}": float(metrics[k]) for k in LOGGED})
        if self.trainer.sanity_checking:
            return
        self.threshold.fill_(metrics["threshold"])
        self.scored = ("val", counts, epoch)

    def on_test_epoch_end(self) -> None:
        threshold = float(self.threshold)
        if np.isnan(threshold):
            raise UserError("ckpt: this checkpoint has no validated threshold (it was saved before its first validation)")
        metrics, counts, epoch = self._epoch_results("test", threshold)
        self.log_dict({f"test/{k}": float(metrics[k]) for k in LOGGED + AT_THRESHOLD if k != "threshold"})
        self.log("test/threshold", threshold)
        self.scored = ("test", counts, epoch)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["verification"] = {"threshold": float(self.threshold), "metric": "cosine"}

    def render_examples(self, stage: str) -> torch.Tensor | None:
        """Each image with its cosine to the first real image of its identity in the batch; green when
        the frozen threshold decides right (reals accepted, fakes rejected)."""
        ex = self.examples.get(stage)
        threshold = float(self.threshold)
        if not ex or np.isnan(threshold):
            return None
        embeddings, identity, is_fake = ex["out_preds"], ex["label"], ex["is_fake"]
        images = denormalize(ex["image"], self.data_info.mean, self.data_info.std)
        labels, keep = [], []
        for i in range(len(identity)):
            references = torch.nonzero((identity == identity[i]) & ~is_fake).squeeze(1)
            references = references[references != i]
            if not len(references):
                continue
            similarity = float(embeddings[i] @ embeddings[references[0]])
            kind = "fake" if is_fake[i] else "real"
            labels.append((f"id{int(identity[i])} {kind} {similarity:.2f}", (similarity >= threshold) != bool(is_fake[i])))
            keep.append(i)
        return annotated_grid(images[keep], labels) if keep else None

    # --- delivery ----------------------------------------------------------------------------
    def export_spec(self) -> ExportSpec:
        """One image -> its normalised embedding; two embeddings show one person when cosine >= threshold."""
        _, height, width = self.data_info.input_size
        metadata = self.data_info.export_metadata(metric="cosine", embedding_dim=self.net.embedding_dim)
        return ExportSpec(self.net, {"image": torch.zeros(1, 3, height, width)},
                          [Output("embedding", None, float(self.threshold))], answer=Embeddings, metadata=metadata)

