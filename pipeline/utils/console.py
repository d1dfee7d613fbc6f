"""The console a person reads: log lines above the live progress bar, known third-party noise
filtered, and one labelled final table of a run."""

from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from pipeline.runs.table import best_row

# Third-party messages that tell the user nothing about their run (Lightning's advertising tips, a
# deprecation inside Lightning's own pytree helper, the model summary's size caveat under bf16).
NOISE_MESSAGES = (r"💡 Tip:", r".*isinstance\(treespec, LeafSpec\)", r"Trainer already configured with model summary",
                  r"Precision \S+ is not supported by the model summary")
NOISE_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")
STAGE_PREFIX = re.compile(r"^(train|val|test)/(.+?)(_epoch)?$")


def wide_console() -> Console:
    """The terminal's width, or a wide page when the output goes to a file or pipe (no wrapped tables)."""
    console = Console()
    return console if console.is_terminal else Console(width=250)


class NoiseFilter(logging.Filter):
    """Drop log records whose message matches one of ``NOISE_MESSAGES``."""

    patterns = [re.compile(p) for p in NOISE_MESSAGES]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p.match(message) for p in self.patterns)


def quiet_third_party() -> None:
    """Filter the known third-party noise from logging and warnings; idempotent."""
    for name in NOISE_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, NoiseFilter) for f in logger.filters):
            logger.addFilter(NoiseFilter())
    for message in NOISE_MESSAGES[1], NOISE_MESSAGES[3]:
        warnings.filterwarnings("ignore", message=message)
    # TensorBoard's event reader (the run report) logs every file it opens.
    logging.getLogger("tensorboard").setLevel(logging.WARNING)


class ConsoleLogHandler(logging.Handler):
    """Print log records through a Rich console, which puts them above its live progress display."""

    def __init__(self, console: Console, formatter: logging.Formatter | None) -> None:
        super().__init__()
        self.console = console
        self.setFormatter(formatter or logging.Formatter())

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.console.print(self.format(record), markup=False, highlight=False, soft_wrap=True)
        except Exception:  # noqa: BLE001 - logging must never break training
            self.handleError(record)


def by_metric(metrics: dict[str, Any], stage: str) -> dict[str, float]:
    """``{"val/f1": x, "train/loss_epoch": y}`` -> ``{"f1": x}`` for ``val`` (``loss`` for ``train``);
    per-step values are left out, the epoch value stands for its metric."""
    out = {}
    for key, value in metrics.items():
        match = STAGE_PREFIX.match(key)
        if match and match.group(1) == stage and not key.endswith("_step") and value is not None:
            # "train/loss" may hold the last step's value; "train/loss_epoch" is the epoch's.
            if match.group(3) or match.group(2) not in out:
                out[match.group(2)] = value
    return out


def final_table(title: str, results: dict[str, Any], history: list[dict[str, Any]], mode: str, run_dir: Path,
                tested: Path | None = None) -> Table:
    """One table of a finished run: each metric once per row; columns for training (last epoch),
    validation at the best epoch and test on the best checkpoint (or ``tested``), each labelled; the best
    epoch and checkpoint in the caption. ``results`` is what ``train()`` writes to ``results/metrics.json``."""
    history_last = history[-1]["epoch"] if history else None
    best = best_row(history, results["best"]["monitor"], mode) if "best" in results else None
    columns: list[tuple[str, dict[str, float]]] = [
        (f"train, last epoch{f' {history_last}' if history_last is not None else ''}", by_metric(results["fit"], "train")),
    ]
    if best is not None:
        columns.append((f"val, best epoch {best['epoch']}", by_metric(best, "val")))
    else:
        columns.append(("val, last epoch", by_metric(results["fit"], "val")))
    checkpoint = results.get("best", {}).get("checkpoint")
    if "test" in results:
        tested_name = Path(tested or checkpoint).name if (tested or checkpoint) else "final weights"
        columns.append((f"test, {tested_name}", by_metric(results["test"], "test")))
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    for label, _ in columns:
        table.add_column(label, justify="right")
    names = sorted({name for _, values in columns for name in values}, key=lambda name: (name != "loss", name))
    for name in names:
        table.add_row(name, *(f"{values[name]:.4f}" if name in values else "" for _, values in columns))
    if "best" in results:
        where = f" at epoch {best['epoch']}" if best is not None else ""
        path = Path(checkpoint)
        shown = path.relative_to(run_dir) if checkpoint and path.is_relative_to(run_dir) else path
        table.caption = (f"best {results['best']['monitor']} = {results['best']['score']:.4f}{where}; "
                         f"checkpoint {shown}")
        table.caption_justify = "left"
    return table
