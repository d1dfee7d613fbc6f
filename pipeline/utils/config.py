"""Config helpers: the project's config folder and plugins, resolvers, Hydra overrides on a composed config."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from pipeline.utils.errors import UserError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = PROJECT_ROOT / "configs"


_created: dict[str, str] = {}


def unique_run_dir(base: str, remember: bool = True) -> str:
    """Create and return ``base``, or ``base_2``, ``base_3``... if taken (atomic ``mkdir``).

    Two runs started in the same second get different folders. Memoised per process (``remember``): Hydra may
    resolve the run-dir interpolation more than once, and it must name one folder; a caller that wants a new
    folder at each call (a re-test, which a Python session may start twice in a second) passes False.
    """
    if remember and base in _created:
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
    if remember:
        _created[base] = candidate
    return candidate


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
