"""A trained run, opened once for every command: its folder, its saved config, checkpoint, datamodule and task.

``bin/test.py``, ``predict.py``, ``export.py``, ``serve.py`` and ``benchmark.py`` are Hydra apps
(``run_command``): the run named by ``run=<folder>|latest`` (+ ``experiment=``) is found first, its
saved config is offered to Hydra as the config group ``saved_run`` and each command's own config
(``configs/<command>.yaml``) is merged on top. So ``--help``, ``--cfg job`` and unknown keys behave
as in ``bin/train.py``, and ``data.num_workers=0`` overrides the run's own config.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig

from pipeline.runs.folder import find_checkpoint, find_run, load_checkpoint
from pipeline.runs.layout import RunLayout
from pipeline.runs.saved_config import load_run_config, without_experiment
from pipeline.runs.trust import check_run_config
from pipeline.trainers.engine import build_datamodule, build_task
from pipeline.utils.cli import HYDRA_FLAGS, exit_on_user_error, run_hydra
from pipeline.utils.config import CONFIG_DIR, apply_overrides, register_resolvers
from pipeline.utils.errors import UserError

SAVED_RUN_GROUP = "saved_run"


@dataclass
class Run:
    """A trained run: ``dir`` and ``cfg`` (its saved config, with a command's own keys merged on top)."""

    dir: Path
    cfg: DictConfig

    def __post_init__(self) -> None:
        if self.dir is not None:  # a run folder is data: build only what it may name, unless trust_run=true
            check_run_config(self.dir, self.cfg)

    @classmethod
    def open(cls, run: str | Path | None = "latest", overrides: Sequence[str] = (), experiment: str | None = None) -> Run:
        """Open a run from Python: ``run`` folder or ``latest`` and ``key=value`` overrides of its config."""
        run_dir = find_run(None if run is None else str(run), [*overrides, *([f"experiment={experiment}"] if experiment else [])])
        return cls(run_dir, apply_overrides(load_run_config(run_dir), overrides))

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.dir)

    def checkpoint(self, which: str = "best") -> Path:
        return find_checkpoint(self.dir, which)

    def datamodule(self, setup: bool = True) -> Any:
        """The run's datamodule; ``setup=False`` skips data loading (enough for ``preprocess`` and ``info``)."""
        return build_datamodule(self.cfg) if setup else instantiate(self.cfg.data, _recursive_=False)

    def task(self, ckpt: str = "best") -> Any:
        """The run's task with the weights of checkpoint ``ckpt`` (best | last | a path), in eval mode.

        The data description comes from the checkpoint: exactly what the model was trained with.
        """
        state = load_checkpoint(self.checkpoint(ckpt))
        task = build_task(self.cfg, state["hyper_parameters"]["data_info"])
        task.load_state_dict(state["state_dict"])
        return task.eval()


def requested_run(argv: Sequence[str]) -> Path | None:
    """The run folder that a command line's ``run=``/``experiment=``/``paths.*`` name; None when the command
    line only asks Hydra for help or a config print and no run can be found."""
    overrides = OverridesParser.create().parse_overrides([a for a in argv if "=" in a and not a.startswith("-")])
    values = {o.key_or_group: o.value() for o in overrides}
    run = values.get("run")
    if isinstance(run, list):  # several runs (combined prediction): the first one's config is the base
        run = run[0] if run else None
    try:
        return find_run(run, argv)
    except UserError:
        if any(arg.split("=")[0] in HYDRA_FLAGS for arg in argv):
            return None
        raise


def offer_run(argv: Sequence[str]) -> tuple[Path | None, list[str]]:
    """Find the run a command line names and offer its saved config to Hydra as ``saved_run/config``; also the
    command line less ``experiment=``, which Hydra would read as a choice in a group a command's config has not."""
    register_resolvers()
    run_dir = requested_run(argv)
    if run_dir is not None:
        ConfigStore.instance().store(group=SAVED_RUN_GROUP, name="config", node=load_run_config(run_dir))
    return run_dir, without_experiment(argv, run_dir)


def compose_command(config_name: str, argv: Sequence[str]) -> Run:
    """The run and config a command line gives the Hydra app of ``configs/<config_name>.yaml`` (Python use, tests)."""
    run_dir, overrides = offer_run(argv)
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return Run(run_dir, compose(config_name=config_name, overrides=overrides))


def run_command(config_name: str) -> Callable[[Callable[[Run], Any]], Callable[[], Any]]:
    """Decorate ``fn(run)`` into the ``main()`` of a Hydra app of ``configs/<config_name>.yaml`` over a run."""

    def decorate(fn: Callable[[Run], Any]) -> Callable[[], Any]:
        @exit_on_user_error
        def main() -> Any:
            run_dir, sys.argv[1:] = offer_run(sys.argv[1:])
            return run_hydra(config_name, lambda cfg: fn(Run(run_dir, cfg)))

        return main

    return decorate
