"""``model.init_from``: start a fresh run from an earlier run (any task) or a weights file.

A run folder gives its best checkpoint (or ``model.init_ckpt``: ``best``, ``last`` or a file); its network's
tensors are loaded wherever name and shape match (``pipeline.modules.init_weights``). When the source run
recorded its split (``results/split.json``) and it trained on items that are this run's val or test items,
the run warns with the count (``model.init_leak=warn``) or stops (``refuse``). What was loaded is logged
as one table and kept in ``results/init_from.json`` (then in ``metrics.json`` and ``report.md``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from pipeline.modules.init_weights import backbone_prefix, load_matching, read_state_dict
from pipeline.runs.folder import find_checkpoint
from pipeline.runs.layout import RunLayout
from pipeline.utils.errors import UserError
from pipeline.utils.files import write_json

log = logging.getLogger(__name__)

LEAK_POLICIES = ("warn", "refuse")


def resolve_source(init_from: str, ckpt: str | None = None) -> tuple[Path, Path | None]:
    """``(weights file, source run folder or None)`` for ``model.init_from``."""
    path = Path(init_from).expanduser().resolve()
    if not path.exists():
        raise UserError(f"model.init_from: '{path}' does not exist (give a run folder or a weights file)")
    if path.is_dir():
        if not RunLayout(path).is_run():
            raise UserError(f"model.init_from: '{path}' is a folder but not a run folder (no .hydra/config.yaml)")
        return find_checkpoint(path, ckpt or "best"), path
    if ckpt:
        raise UserError(f"model.init_ckpt={ckpt}: applies to a run folder, and model.init_from is a file")
    return path, None


def read_split(path: Path) -> dict[str, set[str]]:
    """A ``results/split.json`` record as a set of item keys per split."""
    try:
        payload = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable split record ({exc})") from None
    return {name: set(payload.get(name, [])) for name in ("train", "val", "test")}


def leaked_items(source_split: Path, this_split: Path) -> int:
    """How many items the source run trained on are in this run's val or test split."""
    source, this = read_split(source_split), read_split(this_split)
    return len(source["train"] & (this["val"] | this["test"]))


def check_leak(source_run: Path, this_split: Path | None, policy: str) -> int | None:
    """Warn (or refuse) when the source run trained on this run's val/test items; the count, or None unknown."""
    if policy not in LEAK_POLICIES:
        raise UserError(f"model.init_leak={policy}: expected one of {', '.join(LEAK_POLICIES)}")
    source_split = RunLayout(source_run).split
    if this_split is None or not this_split.is_file() or not source_split.is_file():
        return None
    leaked = leaked_items(source_split, this_split)
    if leaked:
        message = (f"model.init_from: the source run '{source_run}' trained on {leaked} items that are in this "
                   f"run's val/test split, so its val/test figures are optimistic; train the source with "
                   f"data.split_file={this_split} (or this run with the source's split)")
        if policy == "refuse":
            raise UserError(message + " [model.init_leak=refuse]")
        log.warning(message)
    return leaked


def initialise(cfg: DictConfig, task: pl.LightningModule, datamodule: Any, run_dir: Path) -> dict[str, Any] | None:
    """Load ``cfg.model.init_from`` into ``task.net`` (a fresh run only); returns and records what was loaded."""
    model = cfg.model
    init_from = model.get("init_from")
    if not init_from:
        return None
    weights, source_run = resolve_source(str(init_from), model.get("init_ckpt"))
    leaked = None
    if source_run is not None:
        splitter = getattr(datamodule, "splitter", None)
        this_split = getattr(splitter, "split_out", None)
        leaked = check_leak(source_run, Path(this_split) if this_split else None, str(model.get("init_leak", "warn")))
    state, kind = read_state_dict(weights)
    key_map = model.get("init_key_map")
    key_map = OmegaConf.to_container(key_map) if isinstance(key_map, DictConfig) else key_map
    report = load_matching(task.net, state, str(weights), kind, backbone_prefix(task.net),
                           model.get("init_prefix"), key_map)
    log.info("%s", report.table())
    record = {**report.to_dict(), "run": str(source_run) if source_run else None, "leaked_items": leaked}
    if rank_zero_only.rank == 0:
        write_json(RunLayout(run_dir).init_record, record)
    return record
