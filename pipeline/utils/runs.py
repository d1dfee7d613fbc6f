"""Run folders: unique timestamped directories, finding runs and their checkpoints."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from pipeline.utils.errors import UserError

RUN_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2}(_\d+)?$")
_created: dict[str, str] = {}


def unique_run_dir(base: str) -> str:
    """Create and return ``base``, or ``base_2``, ``base_3``... if taken (atomic ``mkdir``).

    Two runs started in the same second get different folders. Memoised per process: Hydra may
    resolve the run-dir interpolation more than once, and it must name one folder.
    """
    if base in _created:
        return _created[base]
    Path(base).parent.mkdir(parents=True, exist_ok=True)
    candidate, n = base, 1
    while True:
        try:
            os.mkdir(candidate)
            break
        except FileExistsError:
            n += 1
            candidate = f"{base}_{n}"
    _created[base] = candidate
    return candidate


def is_run_dir(path: Path) -> bool:
    """A run folder holds the config Hydra saved for it."""
    return (path / ".hydra" / "config.yaml").is_file()


def latest_run(experiment_dir: str | Path) -> Path:
    """The most recent run folder under ``experiments_results/<experiment>``."""
    experiment_dir = Path(experiment_dir)
    runs = sorted(
        (p for p in experiment_dir.glob("*") if RUN_NAME.match(p.name) and is_run_dir(p)),
        key=lambda p: (p.name.split("_")[0], p.name.split("_")[1], int(p.name.split("_")[2]) if p.name.count("_") > 1 else 0),
    )
    if not runs:
        raise UserError(f"no finished or started run found in '{experiment_dir}' (train one first with bin/train.py)")
    return runs[-1]


def resolve_run_dir(value: str | None, results_dir: str | Path, experiment: str) -> Path:
    """``latest``/None -> the newest run of ``experiment``; otherwise the given folder (checked)."""
    if value in (None, "", "latest"):
        return latest_run(Path(results_dir) / experiment)
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise UserError(f"run: folder '{path}' does not exist (give a run folder under experiments_results/)")
    if not is_run_dir(path):
        raise UserError(f"run: '{path}' is not a run folder (no .hydra/config.yaml inside)")
    return path


def best_checkpoint(run_dir: Path) -> Path | None:
    """The best checkpoint recorded by ModelCheckpoint in ``last.ckpt``, mapped into this run folder."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if not last.is_file():
        return None
    state = torch.load(last, map_location="cpu", weights_only=True)
    for key, value in state.get("callbacks", {}).items():
        if key.startswith("ModelCheckpoint") and value.get("best_model_path"):
            candidate = run_dir / "checkpoints" / Path(value["best_model_path"]).name
            if candidate.is_file():
                return candidate
    return None


def find_checkpoint(run_dir: Path, which: str = "best") -> Path:
    """``best`` | ``last`` | a path -> an existing checkpoint file, or a UserError that says what is missing."""
    if which == "last":
        path = run_dir / "checkpoints" / "last.ckpt"
    elif which == "best":
        path = best_checkpoint(run_dir) or run_dir / "checkpoints" / "last.ckpt"
    else:
        path = Path(which).expanduser()
    if not path.is_file():
        raise UserError(f"ckpt: no checkpoint '{path}' in run '{run_dir}' (was the run trained for an epoch?)")
    return path
