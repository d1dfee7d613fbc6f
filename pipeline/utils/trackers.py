"""Experiment trackers besides TensorBoard: a CSV file that a resume or a re-test appends to, and MLflow
with a local store, named after the run folder. Both take the headline metrics ``train()`` gives
TensorBoard's HPARAMS (``log_hyperparams(params, metrics)``), which Lightning's own loggers do not accept."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger, MLFlowLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

from pipeline.utils.errors import UserError

# TensorBoard's Time Series and MLflow's metric list order names alphabetically, by the part before the first
# "/" (the group): test < train < val. The trackers file the test figures under TEST_GROUP, which sorts after
# train and val, so both open on the training curves; results/test_metrics.json, metrics.json, the report
# and the console keep the plain ``test/`` names.
TEST_GROUP = "z_test"


def tracker_stage(stage: str) -> str:
    """The group a stage's scalars, images and figures have in every tracker: ``test`` -> ``z_test``."""
    return TEST_GROUP if stage == "test" else stage


def tracker_name(key: str) -> str:
    """A metric's name in TensorBoard, CSV and MLflow: ``test/acc`` -> ``z_test/acc``, others unchanged."""
    stage, slash, rest = key.partition("/")
    return f"{tracker_stage(stage)}/{rest}" if slash else key


def tracker_names(metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {tracker_name(key): value for key, value in metrics.items()}


class AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer that keeps an existing ``metrics.csv`` (its rows and columns) instead of
    deleting it: a resumed run or ``bin/test.py`` on the run adds rows to the training's file."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = sorted(next(csv.reader(file), []))


class RunCSVLogger(CSVLogger):
    """``CSVLogger`` writing ``<save_dir>/<name>/metrics.csv`` (one row per logging call, every scalar, the
    names TensorBoard shows: ``tracker_name``), appended to across resumes and re-tests, and flushed at every epoch's end
    by ``pipeline.callbacks.results.Results``."""

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        super().log_metrics(tracker_names(metrics), step)

    @rank_zero_only
    def log_hyperparams(self, params: Any = None, metrics: Mapping[str, float] | None = None) -> None:
        super().log_hyperparams(params)


class LocalMLflowLogger(MLFlowLogger):
    """Lightning's ``MLFlowLogger`` writing to a local store (``tracking_uri: file:<folder>``, no server),
    its MLflow run named like the run folder (``<experiment>/<timestamp>``) and tagged with the folder's
    path. Metric names are the ones TensorBoard and CSV get (``tracker_name``; MLflow accepts ``/`` and ``-``).

    Without MLflow installed: one line saying how to install it, not Lightning's traceback.
    """

    def __init__(self, run_dir: str, **kwargs: Any) -> None:
        try:
            import mlflow  # noqa: F401
        except ModuleNotFoundError:
            raise UserError("logger=mlflow: MLflow is not installed; `pip install mlflow` (or `.venv/bin/python -m pip "
                            "install mlflow`), or choose logger=[tensorboard,csv]") from None
        folder = Path(run_dir)
        tags = {"run_dir": str(folder), **(kwargs.pop("tags", None) or {})}
        kwargs.setdefault("run_name", f"{folder.parent.name}/{folder.name}")
        super().__init__(tags=tags, **kwargs)
        self._logged: set[str] = set()

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        metrics = tracker_names(metrics)
        self._logged.update(metrics)
        super().log_metrics(metrics, step)

    @rank_zero_only
    def log_hyperparams(self, params: Any, metrics: Mapping[str, float] | None = None) -> None:
        """The parameters, then the headline metrics not logged before (the best validation value and
        its epoch; the test figures are already there)."""
        super().log_hyperparams(params)
        new = {key: value for key, value in tracker_names(metrics or {}).items() if key not in self._logged}
        if new:
            self.log_metrics(new, 0)
