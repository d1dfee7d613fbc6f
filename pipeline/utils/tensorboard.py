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

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        metrics = {key: value for key, value in metrics.items() if key != "epoch"}
        if metrics:
            super().log_metrics(metrics, step)

    @rank_zero_only
    def log_layout(self, layout: dict[str, dict[str, list]]) -> None:
        """Write a Custom Scalars layout: ``{category: {chart: ["Multiline", [tag regex, ...]]}}``."""
        self.experiment.add_custom_scalars(layout)
