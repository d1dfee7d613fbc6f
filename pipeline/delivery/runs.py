"""Loading a trained run for delivery: its saved config, datamodule and task from a checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from pipeline.trainers.engine import build_task
from pipeline.utils.config import PROJECT_ROOT, apply_overrides, register_resolvers
from pipeline.utils.errors import UserError
from pipeline.utils.runs import find_checkpoint, resolve_run_dir

CONFIG_DIR = PROJECT_ROOT / "configs"


@dataclass
class RunArgs:
    """A delivery command line: the run folder, its config, the tool's own options and config overrides."""

    run_dir: Path
    cfg: DictConfig
    options: dict[str, str] = field(default_factory=dict)


def parse_key_values(argv: Sequence[str], usage: str) -> list[tuple[str, str]]:
    """``key=value`` pairs of a command line; anything else is a UserError quoting ``usage``."""
    pairs = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep or not key:
            raise UserError(f"'{arg}': arguments are key=value ({usage})")
        pairs.append((key, value))
    return pairs


def load_run_args(argv: Sequence[str], usage: str) -> RunArgs:
    """Resolve ``run=<folder>|latest`` (newest run of ``experiment=``), load its saved config and apply
    the config overrides (keys containing a dot, e.g. ``data.num_workers=0``); other keys are options."""
    register_resolvers()
    options, overrides = {}, []
    for key, value in parse_key_values(argv, usage):
        if "." in key:
            overrides.append(f"{key}={value}")
        else:
            options[key] = value
    run_dir = resolve_run(options.pop("run", None), options.pop("experiment", None), overrides)
    return RunArgs(run_dir, apply_overrides(load_run_config(run_dir), overrides), options)


def load_run_config(run_dir: Path) -> DictConfig:
    """A run's saved config, with ``paths.output_dir`` pointing at the run."""
    register_resolvers()
    cfg = OmegaConf.load(Path(run_dir) / ".hydra" / "config.yaml")
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    return cfg


def resolve_run(run: str | None, experiment: str | None, overrides: Sequence[str]) -> Path:
    """The run folder named by ``run``, or the newest run of ``experiment`` (default experiment if None)."""
    if run not in (None, "", "latest"):
        return resolve_run_dir(run, "", "")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        selection = [f"experiment={experiment}"] if experiment else []
        defaults = compose(config_name="train", overrides=selection + [o for o in overrides if o.startswith("paths.")])
    return resolve_run_dir(None, defaults.paths.results_dir, defaults.name)


def build_datamodule(cfg: DictConfig, setup: bool = True) -> Any:
    """The run's datamodule; ``setup=False`` skips data loading (enough for ``preprocess`` and ``info``)."""
    datamodule = instantiate(cfg.data, _recursive_=False)
    if setup:
        datamodule.prepare_data()
        datamodule.setup("fit")
    return datamodule


def load_task(cfg: DictConfig, run_dir: Path, ckpt: str = "best") -> Any:
    """The run's task with the weights of checkpoint ``ckpt`` (best | last | a path), in eval mode.

    The data description comes from the checkpoint: exactly what the model was trained with.
    """
    checkpoint = find_checkpoint(run_dir, ckpt)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    task = build_task(cfg, state["hyper_parameters"]["data_info"])
    task.load_state_dict(state["state_dict"])
    return task.eval()
