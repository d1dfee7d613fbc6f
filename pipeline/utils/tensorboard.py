"""TensorBoard logger for the framework's dashboards: no ``epoch`` counter among the scalars, the
Custom Scalars layout, and HPARAMS that open on the settings people compare runs by."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only

from pipeline.utils.trackers import tracker_names

# Shown first in TensorBoard's HPARAMS table, with the command-line overrides (it sorts them by name).
PROMINENT_HPARAMS = ("backbone", "lr", "batch_size", "epochs", "data_root")


def shown_as_written(params: Mapping[str, Any]) -> dict[str, Any]:
    """Integers as text: HPARAMS prints every number with 5 significant digits (``3`` as ``3.0000``)."""
    return {key: str(value) if isinstance(value, int) and not isinstance(value, bool) else value
            for key, value in params.items()}


def flag_prominent(experiment_summary: Any, names: list[str]) -> None:
    """Set ``differs`` on the named hyperparameters of an HPARAMS experiment summary, in place."""
    from tensorboard.plugins.hparams import plugin_data_pb2

    value = experiment_summary.value[0]
    data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
    for info in data.experiment.hparam_infos:
        info.differs = info.name in names
    value.metadata.plugin_data.content = data.SerializeToString()


class DashboardLogger(TensorBoardLogger):
    """Lightning's ``TensorBoardLogger`` without the ``epoch`` scalar Lightning adds to every logging call, and
    with the test figures under ``z_test/`` (``pipeline.utils.trackers.tracker_name``: after train and val).

    That counter is a straight line that Time Series shows as its first card; the epoch of every point
    is already in the steps and in ``results/metrics_history.json``.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._logged_tags: set[str] = set()
        self._writing_hparams = False

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        # HPARAMS reads its metrics from scalars of the same tag: those already logged (test/*) are
        # not written again at step 0.
        skip = {"epoch"} | (self._logged_tags if self._writing_hparams else set())
        metrics = {key: value for key, value in tracker_names(metrics).items() if key not in skip}
        self._logged_tags.update(metrics)
        if metrics:
            super().log_metrics(metrics, step)

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any], metrics: dict[str, Any] | None = None,
                        step: int | None = None) -> None:
        """Lightning's HPARAMS record, with the ``PROMINENT_HPARAMS`` and every dotted key (a command-line
        override: what a sweep varies) flagged ``differs``: TensorBoard's table sorts those first and
        shows only its first five hyperparameters until more are ticked."""
        from torch.utils.tensorboard.summary import hparams

        if not metrics:
            super().log_hyperparams(params, metrics, step)
            return
        self.hparams.update(params)
        metrics = tracker_names(metrics)
        self._writing_hparams = True
        try:
            self.log_metrics(metrics, step or 0)
        finally:
            self._writing_hparams = False
        experiment, start, end = hparams(shown_as_written(self._sanitize_params(dict(params))), metrics)
        flag_prominent(experiment, [key for key in params if key in PROMINENT_HPARAMS or "." in key or "/" in key])
        writer = self.experiment._get_file_writer()
        for summary in (experiment, start, end):
            writer.add_summary(summary, step)

    @rank_zero_only
    def log_layout(self, layout: dict[str, dict[str, list]]) -> None:
        """Write a Custom Scalars layout: ``{category: {chart: ["Multiline", [tag regex, ...]]}}``."""
        self.experiment.add_custom_scalars(layout)
