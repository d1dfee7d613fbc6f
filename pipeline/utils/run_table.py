"""Reading finished, interrupted and running runs back from their folders: per-epoch history, best
epoch, test figures, state, overrides; the table of an experiment's runs and two runs' config diff."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON in ``path``, or ``default`` when the file is missing or half-written."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def best_row(history: list[dict[str, Any]], monitor: str, mode: str = "max") -> dict[str, Any] | None:
    """The history row (one per validation epoch) with the best ``monitor`` value; ties keep the
    earliest epoch, as ModelCheckpoint does."""
    scored = [row for row in history if isinstance(row.get(monitor), int | float) and not math.isnan(row[monitor])]
    if not scored:
        return None
    sign = 1 if mode == "max" else -1
    return max(scored, key=lambda row: (sign * row[monitor], -row["epoch"]))


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """``results/metrics_history.json``: one row per validation epoch (empty before the first)."""
    return read_json(Path(run_dir) / "results" / "metrics_history.json", [])


def read_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides Hydra saved for the run (``.hydra/overrides.yaml``)."""
    import yaml

    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    try:
        return [str(item) for item in yaml.safe_load(path.read_text()) or []]
    except (OSError, yaml.YAMLError):
        return []
