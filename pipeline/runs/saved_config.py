"""A run's saved config: Hydra's ``.hydra`` files written and read back, the experiment a run belongs to.

A run is rebuilt from its YAML files only; the pickle is written for Hydra's ``--experimental-rerun`` and read
only there, with a warning: unpickling runs whatever code the file holds.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.conf import HydraConf
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from pipeline.runs.layout import RunLayout
from pipeline.utils.config import CONFIG_DIR, register_resolvers
from pipeline.utils.errors import UserError
from pipeline.utils.files import atomic_write_text, read_config, replacing


def save_run_config(cfg: DictConfig, hydra_cfg: DictConfig, run_dir: Path) -> None:
    """Write the run's ``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml`` and rerun pickle, each atomically."""
    layout = RunLayout(run_dir)
    atomic_write_text(layout.config, OmegaConf.to_yaml(cfg))
    atomic_write_text(layout.hydra_config, OmegaConf.to_yaml({"hydra": hydra_cfg}))
    atomic_write_text(layout.overrides, OmegaConf.to_yaml(hydra_cfg.overrides.task))
    save_config_pickle(cfg, hydra_cfg, layout.config_pickle)


def read_run_config(run_dir: Path) -> DictConfig:
    """``load_run_config`` with the run's ``hydra`` node from ``.hydra/hydra.yaml`` (YAML: plain data, nothing
    runs while it is read), as Hydra's own config object."""
    cfg = load_run_config(run_dir)
    try:
        saved = read_config(RunLayout(run_dir).hydra_config)
    except OSError as exc:
        raise UserError(f"resume: cannot read the Hydra settings of run '{run_dir}' ({exc})") from None
    if not isinstance(saved.get("hydra"), DictConfig):
        raise UserError(f"{RunLayout(run_dir).hydra_config}: no 'hydra' settings in it (not a file Hydra saved)")
    node = OmegaConf.structured(HydraConf)
    OmegaConf.set_struct(node, False)  # Hydra adds nodes of its own (hydra.env) to its schema
    node.merge_with(saved.hydra)
    with open_dict(cfg):
        cfg.hydra = node
        del cfg.hydra["defaults"]
    return cfg


def project_job_logging() -> DictConfig:
    """The logging setup of this project's own configs (``hydra.job_logging``): a resumed run logs with it, not
    with its folder's, whose handlers and formats could name any class and write any file."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", return_hydra_config=True).hydra.job_logging


def save_config_pickle(cfg: DictConfig, hydra_cfg: DictConfig | None, path: Path) -> None:
    """Write the full config (task config plus the ``hydra`` node) as Hydra's rerun pickle."""
    full = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    if hydra_cfg is not None:
        with open_dict(full):
            full.hydra = hydra_cfg
        # Plugin configs are dataclasses that Hydra's plugin discovery can import a second time (as in
        # submitit jobs), which pickle rejects: keep them as plain nodes.
        with read_write(full.hydra), open_dict(full.hydra):
            for key in ("launcher", "sweeper"):
                full.hydra[key] = OmegaConf.to_container(full.hydra[key], resolve=False)
    with replacing(path) as staging, open(staging, "wb") as fh:
        pickle.dump(full, fh)


def load_config_pickle(path: Path) -> DictConfig:
    """Read a run's ``config.pickle`` (full config with its ``hydra`` node); trusted input, hence the warning."""
    if not path.is_file():
        raise UserError(f"resume: '{path}' does not exist (give a run folder or its .hydra/config.pickle)")
    print(f"warning: {path} is a pickle, and loading it runs any code it holds: use it only for runs you made "
          "(resume=<run folder> reads the run's YAML config instead)", file=sys.stderr)
    try:
        with open(path, "rb") as fh:
            cfg = pickle.load(fh)  # noqa: S301 - the run's own file, written by save_config_pickle
    except (pickle.UnpicklingError, EOFError, AttributeError) as exc:
        raise UserError(f"resume: '{path}' is not a readable config pickle ({exc})") from None
    if not isinstance(cfg, DictConfig):
        raise UserError(f"resume: '{path}' does not hold a config")
    return cfg


def load_run_config(run_dir: Path) -> DictConfig:
    """A run's saved config, with ``paths.output_dir`` pointing at the run; ``trust_run`` is false whatever the
    folder says (only the command line trusts a folder: ``pipeline.runs.trust``)."""
    register_resolvers()
    cfg = read_config(RunLayout(run_dir).config)  # plain YAML, bounded: a run folder is data
    if not isinstance(cfg.get("paths"), DictConfig):
        raise UserError(f"{RunLayout(run_dir).config}: no 'paths' settings in it (not a run's saved config)")
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        cfg.trust_run = False
    return cfg


def run_experiment(run_dir: Path) -> str | None:
    """The experiment a run was trained with: Hydra's recorded choice, else the run's ``name``."""
    layout = RunLayout(run_dir)
    if layout.hydra_config.is_file():
        choice = OmegaConf.select(read_config(layout.hydra_config), "hydra.runtime.choices.experiment", default=None)
        if choice:
            return str(choice)
    return str(read_config(layout.config).get("name")) if layout.config.is_file() else None


def without_experiment(overrides: Sequence[str], run_dir: Path | None) -> list[str]:
    """``overrides`` less ``experiment=<x>``: it only says which run ``latest`` means, and cannot change the
    experiment of the run opened (``run_dir``), so another experiment than the run's is refused."""
    parsed = OverridesParser.create().parse_overrides([o for o in overrides if "=" in o and not o.startswith("-")])
    wanted = next((o.value() for o in parsed if o.key_or_group == "experiment"), None)
    trained = run_experiment(run_dir) if wanted and run_dir else None
    if wanted and trained and str(wanted) != trained:
        raise UserError(f"experiment={wanted}: {run_dir} is a run of experiment={trained} "
                        f"(drop experiment=, or give a run of {wanted})")
    return [o for o in overrides if o.partition("=")[0].lstrip("+") != "experiment"]
