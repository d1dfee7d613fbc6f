"""The run: created by a training, continued by a resume, opened by every other command. It owns the folder's
lock, its saved config (and the hand-over of that config to other ranks), checkpoints and the trust checks.

``bin/test.py``, ``predict.py``, ``export.py``, ``serve.py`` and ``benchmark.py`` are Hydra apps
(``run_command``): the run named by ``run=<folder>|latest`` (+ ``experiment=``) is found first, its
saved config is offered to Hydra as the config group ``saved_run`` and each command's own config
(``configs/<command>.yaml``) is merged on top. So ``--help``, ``--cfg job`` and unknown keys behave
as in ``bin/train.py``, and ``data.num_workers=0`` overrides the run's own config.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from pipeline.runs.folder import (
    find_checkpoint,
    find_run,
    load_checkpoint,
    refuse_failed,
    resume_checkpoint,
    run_lock,
)
from pipeline.runs.layout import RunLayout
from pipeline.runs.ranks import (
    job_scope,
    launched_rank_config,
    pin_run_dir,
    publish_run_config,
    rank_config,
    share_with_ranks,
)
from pipeline.runs.resume import load_resume_config, parse_resume_request
from pipeline.runs.saved_config import (
    load_config_pickle,
    load_run_config,
    read_run_config,
    save_run_config,
    without_experiment,
)
from pipeline.runs.table import write_state
from pipeline.runs.trust import check_run_config
from pipeline.utils.cli import HYDRA_FLAGS, describe_error, exit_on_user_error, run_hydra
from pipeline.utils.config import CONFIG_DIR, apply_overrides, register_resolvers, unique_run_dir
from pipeline.utils.contracts import DataInfo
from pipeline.utils.errors import UserError
from pipeline.utils.files import refuse_links_out

SAVED_RUN_GROUP = "saved_run"


def build_datamodule(cfg: DictConfig, retest_of: str | None = None) -> pl.LightningDataModule:
    """Instantiate ``cfg.data`` (nested nodes are the datamodule's to build) and set it up. ``retest_of``: the
    name of another data set a run is tested on (tested whole unless it has a split; ``SplitChooser.retest_of``)."""
    datamodule = instantiate(cfg.data, _recursive_=False)
    if retest_of is not None and hasattr(datamodule, "splitter"):
        datamodule.splitter.retest_of = retest_of
    datamodule.prepare_data()
    datamodule.setup("fit")
    return datamodule


def build_task(cfg: DictConfig, data_info: DataInfo | dict[str, Any]) -> pl.LightningModule:
    """Instantiate the task's LightningModule with the model and hyp nodes and the data description."""
    return instantiate(cfg.task, model=cfg.model, hyp=cfg.hyp, data_info=data_info, _recursive_=False)


@dataclass
class Run:
    """A run folder ``dir`` and the config ``cfg`` it trains or is used with (for a trained run: its saved config,
    with a command's own keys merged on top)."""

    dir: Path
    cfg: DictConfig

    @classmethod
    def create(cls, cfg: DictConfig) -> Run:
        """A fresh run, in the folder Hydra made for this command line (``paths.output_dir``)."""
        return cls(Path(cfg.paths.output_dir), cfg)

    @classmethod
    def resume(cls, folder: str | Path | None, overrides: Sequence[str] = (), rerun_pickle: str | None = None) -> Run:
        """Continue run ``folder`` (or ``latest``; or the run of Hydra's rerun pickle) with ``overrides``."""
        if rerun_pickle is not None:
            pickle_file = Path(rerun_pickle).expanduser().resolve()
            run_dir, full = pickle_file.parent.parent, load_config_pickle(pickle_file)
            refuse_links_out(run_dir)
        else:
            run_dir = find_run(None if folder is None else str(folder), overrides, key="resume")
            refuse_failed(run_dir)
            full = read_run_config(run_dir)
        if rank_zero_only.rank == 0:  # a run still training is refused here, before its log is touched
            with run_lock(run_dir):
                pass
        overrides = without_experiment(overrides, run_dir)
        return cls(run_dir, load_resume_config(full, run_dir, overrides, trusted=rerun_pickle is not None))

    @classmethod
    def from_command_line(cls, argv: Sequence[str]) -> Run | None:
        """On a rank that another process started, rank 0's run; else the run that ``resume=`` or
        ``--experimental-rerun`` asks to continue; None for a fresh training."""
        cfg = rank_config() or launched_rank_config()
        if cfg is not None:
            return cls.create(cfg)
        rerun_pickle, folder, overrides = parse_resume_request(list(argv))
        if rerun_pickle is None and folder in (None, "", "null"):
            return None
        return cls.resume(folder, overrides, rerun_pickle)

    @classmethod
    def open(cls, run: str | Path | None = "latest", overrides: Sequence[str] = (), experiment: str | None = None) -> Run:
        """Open a trained run from Python: ``run`` folder or ``latest`` and ``key=value`` overrides of its config."""
        run_dir = find_run(None if run is None else str(run), [*overrides, *([f"experiment={experiment}"] if experiment else [])])
        return cls.opened(run_dir, apply_overrides(load_run_config(run_dir), overrides))

    @classmethod
    def opened(cls, run_dir: Path | None, cfg: DictConfig) -> Run:
        """A trained run with a command's config: a run folder is data, so only what it may name is built, unless
        ``trust_run=true``."""
        if run_dir is not None:
            check_run_config(run_dir, cfg)
        return cls(run_dir, cfg)

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.dir)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """One training job writes the run: rank 0 holds its lock, and the launcher's hand-over ends with the job."""
        with job_scope(), run_lock(self.dir) if rank_zero_only.rank == 0 else nullcontext():
            try:
                yield
            except Exception as exc:
                self.mark_failed(exc)
                raise

    def mark_failed(self, exc: Exception) -> None:
        """Mark a run that stopped before its first checkpoint as failed, with the reason, so that ``latest``,
        ``bin/runs.py`` and ``resume=`` say why instead of calling it interrupted."""
        if rank_zero_only.rank == 0 and not self.layout.last_ckpt.exists():
            reason = describe_error(exc) or f"{type(exc).__name__}: {exc}".splitlines()[0]
            write_state(self.layout.run_state, "failed", reason=reason)

    def save_config(self) -> None:
        """Write the run's config files and name the run to the other ranks (within a Hydra app)."""
        if not HydraConfig.initialized():
            return
        if rank_zero_only.rank == 0:
            pin_run_dir(self.dir)
            save_run_config(self.cfg, HydraConfig.get(), self.dir)
            publish_run_config(self.dir)
        share_with_ranks(self.dir)

    def resume_checkpoint(self) -> Path | None:
        """``last.ckpt`` to continue from, or None for a fresh run."""
        return resume_checkpoint(self.dir) if self.cfg.get("resume") else None

    def new_test_folder(self, name: str) -> RunLayout:
        """A new folder under ``tests/`` for one re-test (``_2``, ``_3``... when two start in the same second, also
        from one Python process)."""
        return RunLayout(unique_run_dir(str(self.layout.test_folder(name).root), remember=False))

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
        return Run.opened(run_dir, compose(config_name=config_name, overrides=overrides))


def run_command(config_name: str) -> Callable[[Callable[[Run], Any]], Callable[[], Any]]:
    """Decorate ``fn(run)`` into the ``main()`` of a Hydra app of ``configs/<config_name>.yaml`` over a run."""

    def decorate(fn: Callable[[Run], Any]) -> Callable[[], Any]:
        @exit_on_user_error
        def main() -> Any:
            run_dir, sys.argv[1:] = offer_run(sys.argv[1:])
            return run_hydra(config_name, lambda cfg: fn(Run.opened(run_dir, cfg)))

        return main

    return decorate
