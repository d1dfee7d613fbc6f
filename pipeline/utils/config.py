"""Config helpers: resolvers, saving a run's config (YAML + pickle), loading it back with overrides.

A run is rebuilt from its YAML files only; the pickle is written for Hydra's ``--experimental-rerun`` and read
only there, with a warning: unpickling runs whatever code the file holds.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.conf import HydraConf
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from pipeline.utils.errors import UserError
from pipeline.utils.files import atomic_write_text, read_config, replacing
from pipeline.utils.runs import resolve_run_dir, unique_run_dir

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "configs"


def use_project_plugins() -> None:
    """Make Hydra find this repository's own plugins (``hydra_plugins/``, the Optuna sweeper) whatever the install:
    an editable install's import hook does not extend the ``hydra_plugins`` namespace package Hydra scans."""
    folder = PROJECT_ROOT / "hydra_plugins"
    if not folder.is_dir():
        return  # an installed (not editable) copy: the plugins are in site-packages' hydra_plugins
    try:
        import hydra_plugins
    except ImportError:
        sys.path.append(str(PROJECT_ROOT))
        return
    if str(folder) not in list(hydra_plugins.__path__):
        hydra_plugins.__path__.append(str(folder))


def register_resolvers() -> None:
    """Resolvers used by the configs; idempotent. Also exports PIPELINE_ROOT for ``paths.root_dir``."""
    os.environ.setdefault("PIPELINE_ROOT", str(PROJECT_ROOT))
    if not OmegaConf.has_resolver("unique_dir"):
        OmegaConf.register_new_resolver("unique_dir", unique_run_dir)
    if not OmegaConf.has_resolver("sqlite_url"):
        OmegaConf.register_new_resolver("sqlite_url", sqlite_url)


def sqlite_url(path: str) -> str:
    """``sqlite:///<absolute path>`` with the file's folder created (SQLite creates the file, not folders)."""
    file = Path(path).expanduser().resolve()
    file.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{file}"


def save_run_config(cfg: DictConfig, hydra_cfg: DictConfig, run_dir: Path) -> None:
    """Write the run's ``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml`` and rerun pickle, each atomically."""
    hydra_dir = Path(run_dir) / ".hydra"
    atomic_write_text(hydra_dir / "config.yaml", OmegaConf.to_yaml(cfg))
    atomic_write_text(hydra_dir / "hydra.yaml", OmegaConf.to_yaml({"hydra": hydra_cfg}))
    atomic_write_text(hydra_dir / "overrides.yaml", OmegaConf.to_yaml(hydra_cfg.overrides.task))
    save_config_pickle(cfg, hydra_cfg, hydra_dir / "config.pickle")


def read_run_config(run_dir: Path) -> DictConfig:
    """``load_run_config`` with the run's ``hydra`` node from ``.hydra/hydra.yaml`` (YAML: plain data, nothing
    runs while it is read), as Hydra's own config object."""
    cfg = load_run_config(run_dir)
    try:
        saved = read_config(Path(run_dir) / ".hydra" / "hydra.yaml")
    except OSError as exc:
        raise UserError(f"resume: cannot read the Hydra settings of run '{run_dir}' ({exc})") from None
    if not isinstance(saved.get("hydra"), DictConfig):
        raise UserError(f"{Path(run_dir) / '.hydra' / 'hydra.yaml'}: no 'hydra' settings in it (not a file Hydra saved)")
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


def apply_overrides(cfg: DictConfig, overrides: Sequence[str]) -> DictConfig:
    """Apply ``key=value`` / ``+key=value`` / ``~key`` overrides (Hydra syntax) to a composed config.

    A plain ``key=value`` must name an existing key, as in Hydra; group choices cannot change here.
    """
    parser = OverridesParser.create()
    for override in parser.parse_overrides(list(overrides)):
        key = override.key_or_group
        if override.is_delete():
            with open_dict(cfg):
                parent, _, leaf = key.rpartition(".")
                node = OmegaConf.select(cfg, parent) if parent else cfg
                if node is not None and leaf in node:
                    del node[leaf]
            continue
        if not override.is_add() and OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
            raise UserError(f"{key}: no such config key (use +{key}=... to add a new key)")
        with open_dict(cfg):
            OmegaConf.update(cfg, key, override.value(), merge=True, force_add=True)
    return cfg


def load_run_config(run_dir: Path) -> DictConfig:
    """A run's saved config, with ``paths.output_dir`` pointing at the run; ``trust_run`` is false whatever the
    folder says (only the command line trusts a folder: ``pipeline.utils.trust``)."""
    register_resolvers()
    cfg = read_config(Path(run_dir) / ".hydra" / "config.yaml")  # plain YAML, bounded: a run folder is data
    if not isinstance(cfg.get("paths"), DictConfig):
        raise UserError(f"{Path(run_dir) / '.hydra' / 'config.yaml'}: no 'paths' settings in it (not a run's saved config)")
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
        cfg.trust_run = False
    return cfg


def locate_run(run: str | None, experiment: str | None = None, path_overrides: Sequence[str] = ()) -> Path:
    """The run folder named by ``run``, or the newest run of ``experiment`` (default experiment if None)."""
    if run not in (None, "", "latest"):
        return resolve_run_dir(str(run), "", "")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        selection = [f"experiment={experiment}"] if experiment else []
        defaults = compose(config_name="train", overrides=selection + list(path_overrides))
    return resolve_run_dir(None, defaults.paths.results_dir, defaults.name)
