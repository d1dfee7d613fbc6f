"""Rich progress bar and model summary that keep the console readable."""

from __future__ import annotations

import logging
import sys
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import RichModelSummary, RichProgressBar
from lightning.pytorch.utilities.model_summary import get_formatted_model_size, get_human_readable_count
from rich import get_console
from rich.table import Table

from pipeline.utils.console import ConsoleLogHandler, quiet_third_party


class ProgressBar(RichProgressBar):
    """Lightning's Rich bar, for training, validation, testing and prediction alike, with the console's
    log lines printed above the live bar instead of into it.

    Hydra's console handler holds the terminal stream it was given at start-up, so its lines land in
    the middle of the bar's redraws; while the bar is live, those handlers are swapped for one that
    prints through the bar's own console. Known third-party noise is filtered from here on (the
    callback exists before the Trainer, whose constructor prints the first of it).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        quiet_third_party()
        self._swapped: list[tuple[logging.Logger, logging.Handler, logging.Handler]] = []
        # Output to a file or pipe (nohup, SLURM, `> out.txt`): no bar, whose redraws would fill the file;
        # the EpochLog callback's lines report progress there.
        if not sys.stdout.isatty():
            self.disable()

    def _init_progress(self, trainer: pl.Trainer) -> None:
        super()._init_progress(trainer)
        if self.progress is not None and not self._swapped:
            self._swap_console_handlers()

    def _stop_progress(self) -> None:
        super()._stop_progress()
        self._restore_console_handlers()

    def _swap_console_handlers(self) -> None:
        root = logging.getLogger()
        for handler in list(root.handlers):
            # FileHandler is a StreamHandler too, and must keep writing to its file.
            if type(handler) is logging.StreamHandler:
                live = ConsoleLogHandler(self._console, handler.formatter)
                live.setLevel(handler.level)
                root.removeHandler(handler)
                root.addHandler(live)
                self._swapped.append((root, handler, live))

    def _restore_console_handlers(self) -> None:
        for logger, original, live in self._swapped:
            logger.removeHandler(live)
            logger.addHandler(original)
        self._swapped.clear()


class ModelSummary(RichModelSummary):
    """Lightning's Rich model summary without the FLOPs column and total when nothing was counted
    (the module has no ``example_input_array``, so every FLOPs figure would read 0)."""

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int, **kwargs: Any) -> None:
        if total_flops:
            RichModelSummary.summarize(summary_data, total_parameters, trainable_parameters, model_size,
                                       total_training_modes, total_flops, **kwargs)
            return
        columns = [(name, values) for name, values in summary_data if name != "FLOPs"]
        table = Table(header_style=kwargs.get("header_style", "bold magenta"))
        table.add_column(" ", style="dim")
        for name, _ in columns[1:]:
            table.add_column(name, justify="right" if name == "Params" else "left")
        for row in zip(*(values for _, values in columns)):
            table.add_row(*row)
        console = get_console()
        console.print(table)
        console.print(f"[bold]Params[/]: {get_human_readable_count(int(trainable_parameters)).strip()} trainable, "
                      f"{get_human_readable_count(int(total_parameters - trainable_parameters)).strip()} frozen, "
                      f"{get_formatted_model_size(model_size)} MB; modules in train mode: "
                      f"{total_training_modes['train']}, in eval mode: {total_training_modes['eval']}")
