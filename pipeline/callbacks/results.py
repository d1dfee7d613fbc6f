"""``results/results.csv`` (one row per epoch, every scalar) and ``results/results.png`` (one panel per
metric, train and val together), the files ultralytics users load with pandas and glance at."""

from __future__ import annotations

import csv
import logging
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities import rank_zero_only

from pipeline.callbacks.figure_budget import figure_budget
from pipeline.callbacks.image_grid import PNG_COMPRESSION
from pipeline.callbacks.metrics_history import scalar_metrics
from pipeline.utils.trackers import TEST_GROUP

log = logging.getLogger(__name__)

STAGE = re.compile(r"^(train|val)/(.+?)(_epoch)?$")
# Per-class AP of a class with no example in the split: torchmetrics' -1, shown as absent (empty), never plotted.
ABSENT_CLASS = re.compile(r"(^|/)(ap|ap50|map)(/|_per_class)")


def is_test(key: str) -> bool:
    """A test figure: ``test/*``, or ``z_test/*`` as the trackers name it (``pipeline.utils.trackers.tracker_name``)."""
    return key.startswith(("test/", f"{TEST_GROUP}/"))


def per_epoch(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    """Lightning CSVLogger rows (one per logging call; ``epoch`` set on what ``self.log`` logged, not on what
    callbacks such as the learning-rate monitor log straight to the logger) -> one row per epoch with the
    epoch's last value of every column; per-step (``*_step``) and test columns are left out. A row without
    an epoch belongs to the last epoch that started at or before its step."""
    epoch_start: dict[int, int] = {}
    epoch_end: dict[int, int] = {}
    for row in rows:
        trained = any(value not in (None, "") and not is_test(key) for key, value in row.items()
                      if key not in ("epoch", "step"))
        if row.get("epoch") not in (None, "") and trained:  # a test's rows carry the epoch after the last
            epoch, step = int(float(row["epoch"])), int(float(row.get("step") or 0))
            epoch_start[epoch] = min(epoch_start.get(epoch, step), step)
            epoch_end[epoch] = max(epoch_end.get(epoch, step), step)
    starts = sorted(epoch_start.items())
    table: dict[int, dict[str, Any]] = defaultdict(dict)
    for row in rows:
        if row.get("epoch") not in (None, ""):
            epoch = int(float(row["epoch"]))
        elif starts:
            # The throughput is logged at the step after the epoch's last, the learning rate at its steps.
            step = int(float(row.get("step") or 0))
            epoch = max((e for e, first in starts if first <= step), default=starts[0][0])
        else:
            continue
        for key, value in row.items():
            if key in ("epoch", "step") or key.endswith("_step") or is_test(key) or value in (None, ""):
                continue
            table[epoch][key] = float(value)
    return [{"epoch": epoch, "step": epoch_end.get(epoch), **table[epoch]} for epoch in sorted(table) if table[epoch]]


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """``rows`` as a CSV with ``epoch`` first and the metric columns sorted; absent values empty."""
    keys = sorted({key for row in rows for key in row} - {"epoch", "step"})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["epoch", "step", *keys], restval="")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if value is None or (isinstance(value, float) and math.isnan(value)) or
                             (value == -1.0 and ABSENT_CLASS.search(key)) else value for key, value in row.items()})
    tmp.replace(path)


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def panels(columns: list[str]) -> dict[str, list[str]]:
    """One panel per metric: ``train/loss_epoch`` and ``val/loss`` share ``loss``; other columns alone."""
    out: dict[str, list[str]] = {}
    for column in columns:
        match = STAGE.match(column)
        out.setdefault(match.group(2) if match else column, []).append(column)
    return dict(sorted(out.items(), key=lambda item: (item[0] != "loss", "/" in item[0], item[0])))


STAGE_COLOURS = {"train": "C0", "val": "C1"}  # one colour per stage in every panel, named once in the figure's legend


def plot_results(path: Path, rows: list[dict[str, Any]]) -> None:
    """A grid of line plots, one panel per metric, train and val curves together, epochs on x. Drawn for speed (it is
    redrawn when training ends, on the run's critical path): margins set in inches (``tight_layout`` draws the figure
    once more to measure it), each stage in one colour in every panel with one legend for the figure (a legend per
    panel drew 14 boxes), at most 5 ticks an axis (text is most of matplotlib's drawing time): 15 panels in 0.5 s
    instead of 0.85."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    columns = sorted({key for row in rows for key in row} - {"epoch", "step"})
    groups = panels(columns)
    if not groups:
        return
    cols = min(5, len(groups))
    nrows = math.ceil(len(groups) / cols)
    width, height = 3.2 * cols, 2.6 * nrows + 0.25
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(nrows, cols, squeeze=False)
    fig.subplots_adjust(left=0.5 / width, right=1 - 0.15 / width, bottom=0.55 / height, top=1 - 0.55 / height,
                        wspace=0.3, hspace=0.45)
    stages = {}
    for ax, (title, names) in zip(axes.flat, groups.items()):
        for name in names:
            points = [(row["epoch"], row[name]) for row in rows
                      if row.get(name) not in (None, "") and not (row[name] == -1.0 and ABSENT_CLASS.search(name))]
            if points:
                xs, ys = zip(*points)
                stage = STAGE.match(name)
                label = stage.group(1) if stage else "other"
                stages[label] = ax.plot(xs, ys, marker="." if len(xs) < 30 else None, color=STAGE_COLOURS.get(label, "C2"))[0]
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(5, integer=True))
        ax.yaxis.set_major_locator(MaxNLocator(5))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    if stages:
        fig.legend(list(stages.values()), list(stages), loc="upper right", ncols=len(stages), fontsize=8, frameon=False)
    fig.supxlabel("epoch", fontsize=9, y=0.1 / height)
    fig.savefig(path, dpi=90, pil_kwargs={"compress_level": PNG_COMPRESSION})


class Results(pl.Callback):
    """Write ``results.csv`` into ``out_dir`` at the start of every training epoch (the previous epoch's values
    are complete by then) and when training ends; ``results.png`` with it, as the trainer's ``FigureBudget``
    allows, and always when training ends.

    The rows come from the run's ``CSVLogger`` (``logger=csv``, in the default list: every logged scalar,
    the learning rate and throughput included); without one, from the metrics the trainer holds at each
    epoch's end (what the task logs), added to the rows of an earlier ``results.csv`` on a resume.
    """

    figure_kind = "results.png"  # what ``FigureBudget`` times its drawings as

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self._rows: dict[int, dict[str, Any]] = {}

    @property
    def csv_path(self) -> Path:
        return self.out_dir / "results.csv"

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch > 0:
            self.write(trainer, trainer.current_epoch - 1, figure_budget(trainer).allows(self.figure_kind))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.write(trainer, trainer.current_epoch - 1 if trainer.current_epoch else 0, plot=True)

    @rank_zero_only
    def write(self, trainer: pl.Trainer, epoch: int, plot: bool = True) -> None:
        csv_logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
        if csv_logger is not None:
            csv_logger.save()
            source = Path(csv_logger.experiment.metrics_file_path)
            rows = per_epoch(read_csv(source)) if source.is_file() else []
        else:
            metrics = {k: v for k, v in scalar_metrics(trainer.callback_metrics).items()
                       if not k.endswith("_step") and not is_test(k)}
            self._rows[epoch] = {"epoch": epoch, "step": trainer.global_step, **metrics}
            earlier = [{k: (float(v) if v != "" else None) for k, v in row.items()} for row in read_csv(self.csv_path)
                       if int(row["epoch"]) < min(self._rows)] if self.csv_path.is_file() else []
            for row in earlier:
                row["epoch"] = int(row["epoch"])
            rows = earlier + [self._rows[e] for e in sorted(self._rows)]
        if not rows:
            return
        write_csv(self.csv_path, rows)
        if not plot:
            return
        try:
            with figure_budget(trainer).drawing(self.figure_kind):
                plot_results(self.out_dir / "results.png", rows)
        except Exception as error:  # noqa: BLE001 - a figure must not stop training
            log.warning("results.png not written: %s", error)
