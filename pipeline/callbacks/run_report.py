"""``results/report.md``: what a person pastes into a review after a run (curves, confusion matrices
or the task's other figures, the per-class table, the final metrics)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import matplotlib
from lightning.pytorch.utilities import rank_zero_only

from pipeline.callbacks.dashboard import OPTIMISATION
from pipeline.callbacks.image_grid import TestedWeights, epoch_name
from pipeline.callbacks.metrics_history import scalar_metrics
from pipeline.runs.layout import RunLayout
from pipeline.runs.table import best_row, read_history
from pipeline.utils.console import by_metric
from pipeline.utils.files import atomic_write_text, read_json

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the headless backend


def read_curves(event_dir: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{metric: {"train": [(step, value)], "val": [...]}}`` from the run's TensorBoard event files
    (epoch values only; the train value of an epoch is logged after its validation)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not event_dir.is_dir():
        return {}
    events = EventAccumulator(str(event_dir), size_guidance={"scalars": 0})
    events.Reload()
    curves: dict[str, dict[str, list[tuple[int, float]]]] = {}
    tags = events.Tags()["scalars"]
    for tag in tags:
        stage, _, name = tag.partition("/")
        if (stage not in ("train", "val") or name.endswith("_step") or (stage == "train" and f"{tag}_epoch" in tags)
                or OPTIMISATION.match(tag)):  # the learning rate and speed have no val curve
            continue
        name = name.removesuffix("_epoch")
        curves.setdefault(name, {})[stage] = [(e.step, e.value) for e in events.Scalars(tag)]
    return curves


def plot_curves(curves: dict[str, dict[str, list[tuple[int, float]]]], path: Path) -> bool:
    """One panel per metric with its train and val curves against the training step; False if none."""
    names = sorted(curves, key=lambda name: (name != "loss", name))
    if not names:
        return False
    fig, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2), dpi=100, squeeze=False)
    for ax, name in zip(axes[0], names):
        for stage, points in sorted(curves[name].items()):
            steps, values = zip(*points)
            ax.plot(steps, values, marker="o", markersize=3, label=stage)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def markdown_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    def cell(value: Any) -> str:
        try:
            return f"{float(value):.4f}" if "." in str(value) else str(value)
        except ValueError:
            return str(value)

    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + \
        ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


class RunReport(TestedWeights):
    """After testing, write ``<results>/report.md`` and ``curves.png``; it links the figures other
    callbacks and the task left in the results folder (``test_*.png``, ``per_class_report.csv``)."""

    def __init__(self, results_dir: str | Path, event_dir: str | Path, title: str = "run report") -> None:
        self.results_dir = Path(results_dir)
        self.event_dir = Path(event_dir)
        self.title = title

    @rank_zero_only
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.results_dir.mkdir(parents=True, exist_ok=True)
        lines = [f"# {self.title}", "", f"Run folder: `{self.results_dir.parent}`", ""]
        lines += self.init_section()
        lines += self.metrics_section(trainer, pl_module)
        if plot_curves(read_curves(self.event_dir), self.results_dir / "curves.png"):
            lines += ["## Curves", "", "![train and val curves](curves.png)", ""]
        figures = sorted(p.name for p in self.results_dir.glob("test_*.png"))
        if figures:
            lines += ["## Test figures", ""] + [f"![{name}]({name})" for name in figures] + [""]
        per_class = self.results_dir / "per_class_report.csv"
        if per_class.is_file():
            with per_class.open() as fh:
                rows = list(csv.reader(fh))
            lines += ["## Per class (test)", ""] + markdown_table(rows[0], rows[1:]) + [""]
        atomic_write_text(self.results_dir / "report.md", "\n".join(lines))

    def init_section(self) -> list[str]:
        """What the run started from (``model.init_from``, recorded in ``results/init_from.json``)."""
        record = read_json(RunLayout(self.results_dir.parent).init_record, {})
        if not record:
            return []
        leaked = record.get("leaked_items")
        leak = f"; the source trained on {leaked} of this run's val/test items" if leaked else ""
        return [f"Started from `{record['source']}` ({record['kind']}): {record['loaded']} tensors loaded, "
                f"{record['skipped']} skipped (shape mismatch), {record['missing']} missing, "
                f"{record['unexpected']} unexpected{leak}.", ""]

    def metrics_section(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[str]:
        """Validation at the best epoch and test on the tested checkpoint, one row per metric."""
        checkpoint = trainer.checkpoint_callback
        monitor = getattr(checkpoint, "monitor", None)
        mode = getattr(checkpoint, "mode", "max")
        best = best_row(read_history(self.results_dir.parent), monitor, mode) if monitor else None
        test = by_metric(scalar_metrics(trainer.callback_metrics), "test")
        val = by_metric(best, "val") if best else {}
        names = sorted(set(test) | set(val), key=lambda name: (name != "loss", name))
        tested = f"{epoch_name(self.weights_of(trainer, 'test')[0])}, " + \
            (f"`{Path(trainer.ckpt_path).name}`" if trainer.ckpt_path else "final weights")
        header = ["metric", f"val, best epoch {best['epoch']}" if best else "val", f"test, {tested}"]
        rows = [[name, val.get(name, ""), test.get(name, "")] for name in names]
        intro = [f"Best {monitor} = {best[monitor]:.4f} at epoch {best['epoch']}; tested: {tested}.", ""] if best else []
        return ["## Final metrics", ""] + intro + markdown_table(header, rows) + [""]
