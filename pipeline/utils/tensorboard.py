"""TensorBoard logger for the framework's dashboards: no ``epoch`` counter among the scalars."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only


class DashboardLogger(TensorBoardLogger):
    """Lightning's ``TensorBoardLogger`` without the ``epoch`` scalar Lightning adds to every logging call.

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
        metrics = {key: value for key, value in metrics.items() if key not in skip}
        self._logged_tags.update(metrics)
        if metrics:
            super().log_metrics(metrics, step)

    @rank_zero_only
    def log_hyperparams(self, params: Any, metrics: dict[str, Any] | None = None) -> None:
        self._writing_hparams = True
        try:
            super().log_hyperparams(params, metrics)
        finally:
            self._writing_hparams = False

    @rank_zero_only
    def log_layout(self, layout: dict[str, dict[str, list]]) -> None:
        """Write a Custom Scalars layout: ``{category: {chart: ["Multiline", [tag regex, ...]]}}``."""
        self.experiment.add_custom_scalars(layout)
