"""Precision-recall and ROC curves per class for classifiers (torchmetrics' curve functions) and ROC and DET curves with
the EER point for verification (the curves the logged EER is read from), drawn at the improving validation epochs and at
test (see ``BestEpochFigures``).

Verification does not use torchmetrics' ``binary_roc``: it passes scores outside [0, 1] (cosines) through a sigmoid,
so the thresholds it returns are not the scores', and its float32 rates break the ties of |FNR - FPR| otherwise than
the logged EER does (measured: a figure's EER 0.4213 against the logged 0.4120 on a small bf16 run)."""

from __future__ import annotations

from typing import Any, NamedTuple

import lightning.pytorch as pl
import numpy as np
import torch
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_precision_recall_curve,
    binary_roc,
)
from torchmetrics.utilities.distributed import gather_all_tensors

from pipeline.callbacks.image_grid import BestEpochFigures, epoch_name, publish, rendered
from pipeline.metrics.verification import (
    EXACT_MAX_IMAGES,
    EmbeddingCollector,
    RocCurve,
    pair_scores,
    score_histograms,
)
from pipeline.utils.trackers import tracker_stage


class ClassCurves(NamedTuple):
    """One class against the rest: the PR curve (recall, precision), the ROC curve (fpr, tpr), AP and ROC AUC."""

    name: str
    recall: np.ndarray
    precision: np.ndarray
    fpr: np.ndarray
    tpr: np.ndarray
    ap: float
    auc: float


def class_curves(probs: torch.Tensor, target: torch.Tensor, names: list[str]) -> tuple[list[ClassCurves], list[str]]:
    """Per-class curves of ``probs`` [N, C] against integer ``target`` [N]; the classes with no item in ``target``
    (no curve, no AP) are returned by name as absent, and so are classes that are all there is (no negative)."""
    curves, absent = [], []
    for index, name in enumerate(names):
        truth = (target == index).long()
        if truth.sum() == 0 or truth.sum() == len(truth):
            absent.append(name)
            continue
        precision, recall, _ = binary_precision_recall_curve(probs[:, index], truth)
        fpr, tpr, _ = binary_roc(probs[:, index], truth)
        curves.append(ClassCurves(name, recall.numpy(), precision.numpy(), fpr.numpy(), tpr.numpy(),
                                  float(binary_average_precision(probs[:, index], truth)),
                                  float(binary_auroc(probs[:, index], truth))))
    return curves, absent


def plot_classification(curves: list[ClassCurves], absent: list[str], title: str):
    """PR (left) and ROC (right) curves, one line per class with its AP or AUC in the legend. Margins are set in inches
    (``tight_layout`` would draw the figure once more to measure it: 0.28 s instead of 0.18 for two classes)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.8), dpi=100)
    pr, roc = figure.subplots(1, 2)
    small = {"fontsize": 7 if len(curves) > 6 else 8}
    for c in curves:
        pr.plot(c.recall, c.precision, label=f"{c.name} AP {c.ap:.3f}")
        roc.plot(c.fpr, c.tpr, label=f"{c.name} AUC {c.auc:.3f}")
    if curves:
        pr.plot([], [], " ", label=f"mean AP {np.mean([c.ap for c in curves]):.3f}")
        roc.plot([], [], " ", label=f"mean AUC {np.mean([c.auc for c in curves]):.3f}")
    roc.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
    pr.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="precision-recall (one class vs rest)")
    roc.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.02), title="ROC")
    for ax in (pr, roc):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left" if ax is pr else "lower right", **small)
    figure.suptitle(title + (f"\nabsent from the split (no curve): {', '.join(absent)}" if absent else ""), fontsize=10)
    top = 0.75 + (0.18 if absent else 0.0)  # inches above the axes: their titles and the suptitle's lines
    figure.subplots_adjust(left=0.7 / 11, right=1 - 0.2 / 11, bottom=0.6 / 4.8, top=1 - top / 4.8, wspace=0.22)
    return figure


def probit(rates: np.ndarray) -> np.ndarray:
    """The normal deviate of each rate (DET axes), rates clipped to [1e-5, 1 - 1e-5]."""
    from scipy.stats import norm

    return norm.ppf(np.clip(rates, 1e-5, 1 - 1e-5))


def plot_verification(curves: dict[str, RocCurve], title: str):
    """ROC (true accept against false accept, log FPR) and DET (false reject against false accept, normal deviate
    scales), each curve with its EER point (the first, highest threshold, minimising |FNR - FPR|, as the logged EER)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 4.8), dpi=100)
    roc, det = figure.subplots(1, 2)
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95])
    for name, c in curves.items():
        point = c.eer()
        i = int(np.flatnonzero(c.thresholds == point["threshold"])[0])
        line, = roc.plot(np.maximum(c.fpr, 1e-5), 1 - c.fnr, label=f"{name}: EER {point['eer']:.4f} at {point['threshold']:.4f}")
        roc.scatter([max(c.fpr[i], 1e-5)], [1 - c.fnr[i]], color=line.get_color(), zorder=3)
        det.plot(probit(c.fpr), probit(c.fnr), color=line.get_color(), label=f"{name}: EER {point['eer']:.4f}")
        det.scatter(probit(c.fpr[i:i + 1]), probit(c.fnr[i:i + 1]), color=line.get_color(), zorder=3)
    roc.set(xscale="log", xlim=(1e-4, 1), ylim=(0, 1.02), xlabel="false accept rate (FPR)", ylabel="true accept rate",
            title="ROC")
    det.plot(probit(ticks), probit(ticks), color="grey", linestyle=":", linewidth=0.8)
    det.set_xticks(probit(ticks), [f"{t:g}" for t in ticks])
    det.set_yticks(probit(ticks), [f"{t:g}" for t in ticks])
    det.set(xlim=probit(np.array([5e-4, 0.97])), ylim=probit(np.array([5e-4, 0.97])), xlabel="false accept rate",
            ylabel="false reject rate", title="DET (EER: where the curve meets the diagonal)")
    for ax in (roc, det):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    return figure


def gathered(tensors: list[torch.Tensor]) -> torch.Tensor | None:
    """The epoch's per-batch tensors of this process, then of every process (uneven sizes allowed), on the CPU."""
    if not tensors:
        return None
    local = torch.cat(tensors)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        local = torch.cat(gather_all_tensors(local))
    return local.cpu()


class Curves(BestEpochFigures):
    """Collects the ``preds`` and ``target`` each val/test step returns; subclasses turn them into a figure
    (``<out_dir>/<stage>_<name>.png``, with its title and legends in the PNG's metadata, and TensorBoard)."""

    name = "curves"

    def __init__(self, out_dir: str) -> None:
        super().__init__(out_dir)
        self.reset()

    def reset(self) -> None:
        self._batches: dict[str, list[torch.Tensor]] = {"preds": [], "target": []}

    def keep(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, *_: Any) -> None:
        if isinstance(outputs, dict) and isinstance(outputs.get("preds"), torch.Tensor) and not trainer.sanity_checking:
            for key in self._batches:
                self._batches[key].append(outputs[key].detach())

    on_validation_batch_end = on_test_batch_end = keep

    def collect(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> Any:
        batches = self._batches
        self.reset()
        preds, target = gathered(batches["preds"]), gathered(batches["target"])
        return None if preds is None else (preds.float(), target.long())

    def figure(self, pl_module: pl.LightningModule, collected: Any, stage: str, title: str, step: int,
               writers: list) -> Any:
        """The figure to save (None: nothing to draw); ``writers`` are the TensorBoard writers, for extra records."""
        raise NotImplementedError

    def draw(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, collected: Any) -> None:
        epoch, step = self.weights_of(trainer, stage)
        title = f"{stage} ({epoch_name(epoch)})"
        writers = [lg.experiment for lg in trainer.loggers if hasattr(lg.experiment, "add_pr_curve")]
        figure = self.figure(pl_module, collected, stage, title, step, writers)
        if figure is None:
            return
        legends = [text.get_text() for ax in figure.axes if ax.get_legend() for text in ax.get_legend().get_texts()]
        publish(trainer, f"{tracker_stage(stage)}/{self.name}", rendered(figure), step,
                self.out_dir / f"{stage}_{self.name}.png", title, "; ".join(legends))


class ClassificationCurves(Curves):
    """Per class (one against the rest) precision-recall and ROC curves of a classifier's main output, from every
    val/test item's probabilities: ``<stage>_pr_roc_curves.png`` (AP and AUC in the legend, classes absent from the
    split named, not drawn) and TensorBoard's PR curves ``<stage>/pr_curve/<class>``."""

    name = "pr_roc_curves"

    def figure(self, pl_module, collected, stage, title, step, writers):
        probs, target = collected
        if probs.ndim != 2:
            return None
        names = list(getattr(pl_module.data_info, "class_names", None) or [])
        names = names if len(names) == probs.shape[1] else [f"class {i}" for i in range(probs.shape[1])]
        curves, absent = class_curves(probs, target, names)
        for writer in writers:
            for index, name in enumerate(names):
                if name not in absent:
                    writer.add_pr_curve(f"{tracker_stage(stage)}/pr_curve/{name}", target == index, probs[:, index], step)
        return plot_classification(curves, absent, f"{title}: {len(target)} items")


class VerificationCurves(Curves):
    """ROC and DET curves with the EER point: of the pair scores a siamese task returns (genuine: target 1), or of an
    embedding task's val/test pairs as its verification metrics score them (positives against real negatives, and
    against fakes when there are any; exact up to ``EXACT_MAX_IMAGES`` images, from score histograms above):
    ``<stage>_roc_det.png``."""

    name = "roc_det"

    def collect(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> Any:
        metrics = getattr(pl_module, f"{stage}_metrics", None)
        collector = metrics["embeddings"] if metrics is not None and "embeddings" in metrics else None
        if isinstance(collector, EmbeddingCollector) and collector.update_called:
            self.reset()  # the steps' outputs are embeddings: the collector has them with identities and fake flags
            return {k: v.cpu() for k, v in collector.compute().items()}  # cached: the task's own compute reuses it
        return super().collect(trainer, pl_module, stage)

    def figure(self, pl_module, collected, stage, title, step, writers):
        if isinstance(collected, dict):
            embeddings, identity, is_fake = collected["embeddings"], collected["identity"], collected["is_fake"]
            if len(embeddings) <= EXACT_MAX_IMAGES:
                scores = pair_scores(embeddings, identity, is_fake)
                curve = RocCurve.from_scores
            else:
                scores = score_histograms(embeddings, identity, is_fake)
                curve = RocCurve.from_histograms
            pairs = {"real negatives": (scores["positive"], scores["negative_real"]),
                     "fakes": (scores["positive"], scores["fake"])}
        else:
            preds, target = collected
            pairs, curve = {"pairs": (preds[target == 1], preds[target == 0])}, RocCurve.from_scores
        curves = {}
        for name, pair in pairs.items():
            try:
                curves[name] = curve(*pair)
            except ValueError:  # no genuine or no impostor pair (a split without fakes)
                continue
        return plot_verification(curves, title) if curves else None

