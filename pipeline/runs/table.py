"""Reading finished, interrupted and running runs back from their folders: per-epoch history, best
epoch, test figures, state, overrides; the table of an experiment's runs and two runs' config diff."""

from __future__ import annotations

import json
import math
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from pipeline.runs.layout import RunLayout
from pipeline.utils.errors import UserError
from pipeline.utils.files import read_config, read_json, read_yaml, write_csv, write_json


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
    history = read_json(RunLayout(run_dir).history, [])
    return [row for row in history if isinstance(row, dict) and isinstance(row.get("epoch"), int)] \
        if isinstance(history, list) else []


def read_overrides(run_dir: Path) -> list[str]:
    """The command-line overrides Hydra saved for the run (``.hydra/overrides.yaml``)."""
    try:
        return [str(item) for item in read_yaml(RunLayout(run_dir).overrides) or []]
    except (OSError, UserError, TypeError):
        return []


def write_state(path: Path, state: str, **extra: Any) -> None:
    """Record which process has the run in ``state`` (``running``, ``interrupted``, ``failed`` with a reason)."""
    write_json(path, {"state": state, "pid": os.getpid(), "host": socket.gethostname(),
                      "since": datetime.now().isoformat(timespec="seconds"), **extra}, indent=None)


def read_state(run_dir: Path) -> str:
    """``finished`` (``results/metrics.json`` written), ``failed: <reason>`` (stopped before its first checkpoint),
    ``running`` (its process, recorded by the ``RunState`` callback, is alive on this host) or ``interrupted``."""
    layout = RunLayout(run_dir)
    if layout.metrics.is_file():
        return "finished"
    state = read_json(layout.run_state, {})
    if not isinstance(state, dict):
        return "interrupted"
    if state.get("state") == "failed":
        return f"failed: {state.get('reason') or 'reason not recorded'}"
    if state.get("state") == "running" and state.get("host") == socket.gethostname() and pid_alive(state.get("pid")):
        return "running"
    return "interrupted"


def pid_alive(pid: int | None) -> bool:
    """Whether a process with this id exists on this host."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and empty mappings are kept as values."""
    if not isinstance(node, dict) or not node:
        return {prefix.rstrip("."): node}
    out: dict[str, Any] = {}
    for key, value in node.items():
        out.update(flatten(value, f"{prefix}{key}."))
    return out


def config_diff(run_a: Path, run_b: Path) -> list[tuple[str, Any, Any]]:
    """``(key, value in a, value in b)`` for every key of the two runs' saved configs that differs."""
    configs = [flatten(OmegaConf.to_container(read_config(RunLayout(run).config))) for run in (run_a, run_b)]
    keys = sorted(set(configs[0]) | set(configs[1]))
    missing = "(absent)"
    return [(key, configs[0].get(key, missing), configs[1].get(key, missing)) for key in keys
            if configs[0].get(key, missing) != configs[1].get(key, missing)]


@dataclass
class RunSummary:
    """One run folder as a row of the runs table."""

    path: Path
    name: str
    started: str
    state: str
    overrides: dict[str, str]
    monitor: str | None = None
    config: dict[str, Any] = field(default_factory=dict)  # the saved config, flattened (``a.b`` keys)
    best: float | None = None
    best_epoch: int | None = None
    epochs: int = 0
    test: dict[str, float] = field(default_factory=dict)


def summarize_run(run_dir: Path, experiment_dir: Path) -> RunSummary:
    """Read one run folder: start time, state, overrides, best monitored value and epoch, test metrics."""
    layout = RunLayout(run_dir)
    try:
        config = OmegaConf.to_container(read_config(layout.config))
    except (UserError, OSError) as exc:  # one broken run does not hide the others
        reason = str(exc) if isinstance(exc, UserError) else f"{exc.strerror}"
        return RunSummary(path=run_dir, name=str(run_dir.relative_to(experiment_dir)), started="",
                          state=f"unreadable: {reason}", overrides={})
    task = config.get("task") or {}
    if not isinstance(task, dict):
        task = {}
    monitor, mode = task.get("monitor"), task.get("monitor_mode", "max")
    history = read_history(run_dir)
    best = best_row(history, monitor, mode) if monitor else None
    started = datetime.fromtimestamp(layout.config.stat().st_mtime).strftime("%Y-%m-%d %H:%M:%S")
    overrides = dict(item.lstrip("+~").partition("=")[::2] for item in read_overrides(run_dir))
    test_metrics = read_json(layout.test_metrics, {})
    test = {k: v for k, v in (test_metrics if isinstance(test_metrics, dict) else {}).items()
            if k.startswith("test/") and isinstance(v, int | float)}
    return RunSummary(path=run_dir, name=str(run_dir.relative_to(experiment_dir)), started=started,
                      state=read_state(run_dir), overrides=overrides, monitor=monitor, config=flatten(config),
                      best=best[monitor] if best else None, best_epoch=best["epoch"] if best else None,
                      epochs=len(history), test=test)


def find_runs(experiment_dir: Path) -> list[RunSummary]:
    """Every run under ``experiment_dir`` (single runs and multirun jobs), oldest first."""
    experiment_dir = Path(experiment_dir)
    folders = [*experiment_dir.glob("*"), *experiment_dir.glob("multiruns/*/*")]
    runs = [summarize_run(folder, experiment_dir) for folder in folders if RunLayout(folder).is_run()]
    return sorted(runs, key=lambda run: (run.started, run.name))


# Overrides every run of a sweep or of a test harness carries with its own value, and that say
# where a run writes rather than what it trains.
WHERE_KEYS = ("paths.", "hydra.")


def differing_overrides(runs: list[RunSummary]) -> list[str]:
    """Override keys whose value is not the same in every run (absent counts as a value)."""
    keys = sorted({key for run in runs for key in run.overrides if not key.startswith(WHERE_KEYS)})
    return [key for key in keys if len({run.overrides.get(key) for run in runs}) > 1]


def setting(run: RunSummary, key: str) -> Any:
    """The value ``key`` had in ``run``: its override, else the default its saved config holds (``-``: neither)."""
    if key in run.overrides:
        return run.overrides[key]
    value = run.config.get(key, "-")
    return value if isinstance(value, str) else json.dumps(value)


def runs_rows(runs: list[RunSummary]) -> list[dict[str, Any]]:
    """The runs table as rows: run, started, state, the differing overrides (a run that did not override a
    key shows its default), best value and epoch, test."""
    keys = differing_overrides(runs)
    tests = sorted({name for run in runs for name in run.test})
    rows = []
    for run in runs:
        row: dict[str, Any] = {"run": run.name, "started": run.started, "state": run.state}
        row.update({key: setting(run, key) for key in keys})
        row.update({"monitor": run.monitor or "", "best": run.best, "best_epoch": run.best_epoch, "epochs": run.epochs})
        row.update({name: run.test.get(name) for name in tests})
        rows.append(row)
    return rows


def write_dict_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows (same keys) to a CSV file with a header."""
    header = list(rows[0]) if rows else ["run"]
    write_csv(path, header, [[row.get(key, "") for key in header] for row in rows])
