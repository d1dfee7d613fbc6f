"""A verification run's figures and files: after every validation and after test, the pair-score histograms and
a PCA plot of the embeddings (``results/<stage>_score_histograms.png``, ``<stage>_embeddings_pca.png`` and
TensorBoard); after test, ``results/threshold.json`` (the frozen cosine threshold) and TensorBoard's projector
(``projector_size`` test embeddings with thumbnails). It reads what a task leaves in ``scored`` (the metric-learning
task); other tasks are left alone."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch.utilities import rank_zero_only
from matplotlib.figure import Figure

from pipeline.callbacks.image_grid import denormalize, publish, rendered
from pipeline.utils.files import write_json
from pipeline.utils.trackers import tracker_stage


class VerificationReport(pl.Callback):
    """``projector_size`` bounds the TensorBoard projector (0: none), ``max_plot_points`` the PCA plot."""

    def __init__(self, out_dir: str | Path, projector_size: int = 500, max_plot_points: int = 2000) -> None:
        self.out_dir = Path(out_dir)
        self.projector_size = projector_size
        self.max_plot_points = max_plot_points

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After the task's epoch end (callbacks' epoch-end hooks run before the module's) and before run_report's.
        scored = getattr(pl_module, "scored", None)
        if scored is not None:
            pl_module.scored = None
            self.report(trainer, pl_module, *scored)

    on_test_end = on_validation_end

    @rank_zero_only
    def report(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str, counts: dict[str, np.ndarray],
               epoch: dict[str, torch.Tensor]) -> None:
        threshold = float(pl_module.threshold)
        figures = {"score_histograms": score_histogram_figure(counts, threshold),
                   "embeddings_pca": pca_figure(epoch, self.max_plot_points, f"{stage} embeddings (PCA): colour = identity")}
        for name, figure in figures.items():  # drawn once, for the file and TensorBoard
            publish(trainer, f"{tracker_stage(stage)}/{name}", rendered(figure), trainer.global_step,
                    self.out_dir / f"{stage}_{name}.png")
        if stage == "test":
            write_json(self.out_dir / "threshold.json", {"threshold": threshold, "metric": "cosine", "chosen_on": "val eer_real point"})
            self.projector(trainer, pl_module, epoch)

    def projector(self, trainer: pl.Trainer, pl_module: pl.LightningModule, epoch: dict[str, torch.Tensor]) -> None:
        loggers = [lg for lg in trainer.loggers if hasattr(lg.experiment, "add_embedding")]
        if not loggers or self.projector_size <= 0:
            return
        keep = torch.randperm(len(epoch["index"]), generator=torch.Generator().manual_seed(0))[: self.projector_size]
        dataset = trainer.datamodule.datasets["test"]
        thumbnails = torch.stack([dataset[int(i)]["image"] for i in epoch["index"][keep]])
        thumbnails = denormalize(thumbnails, pl_module.data_info.mean, pl_module.data_info.std).float() / 255
        metadata = [[str(int(i)), "fake" if f else "real"] for i, f in zip(epoch["identity"][keep], epoch["is_fake"][keep])]
        for logger in loggers:
            logger.experiment.add_embedding(epoch["embeddings"][keep], metadata=metadata, label_img=thumbnails,
                                            global_step=trainer.global_step, tag=f"{tracker_stage('test')}/embeddings",
                                            metadata_header=["identity", "kind"])


def score_histogram_figure(counts: dict[str, np.ndarray], threshold: float, bins: int = 100) -> Figure:
    """Densities of positive, real-negative and fake pair scores (cosine), with the threshold."""
    figure = Figure(figsize=(6, 3.5), dpi=100)
    axis = figure.subplots()
    centres = np.linspace(-1, 1, bins, endpoint=False) + 1 / bins
    for name, colour in (("positive", "tab:green"), ("negative_real", "tab:blue"), ("fake", "tab:red")):
        coarse = counts[name].reshape(bins, -1).sum(1).astype(float)
        if coarse.sum():
            axis.plot(centres, coarse / coarse.sum(), label=f"{name} ({int(coarse.sum())})", color=colour)
    if not np.isnan(threshold):
        axis.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    axis.set_xlabel("cosine similarity")
    axis.set_ylabel("share of pairs")
    axis.legend(fontsize=7)
    figure.tight_layout()
    return figure


def pca_figure(epoch: dict[str, torch.Tensor], max_points: int, title: str) -> Figure:
    """2-D PCA of embeddings, coloured by identity; dots are real images, crosses fakes."""
    # Imported here: scikit-learn (and pandas) take 1.3 s to import, at every start of every command.
    from sklearn.decomposition import PCA

    keep = torch.randperm(len(epoch["index"]), generator=torch.Generator().manual_seed(0))[:max_points]
    points = PCA(n_components=2).fit_transform(F.normalize(epoch["embeddings"][keep], dim=1).numpy())
    identity, is_fake = epoch["identity"][keep].numpy(), epoch["is_fake"][keep].numpy()
    figure = Figure(figsize=(5, 5), dpi=100)
    axis = figure.subplots()
    for fake, marker in ((False, "o"), (True, "x")):
        chosen = is_fake == fake
        axis.scatter(points[chosen, 0], points[chosen, 1], c=identity[chosen] % 20, cmap="tab20", vmin=0, vmax=19,
                     marker=marker, s=14, label="fake" if fake else "real")
    axis.set_title(title)
    axis.legend(fontsize=7)
    figure.tight_layout()
    return figure
