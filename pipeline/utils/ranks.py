"""DDP ranks that Lightning starts by re-running bin/train.py take rank 0's config, not the command line.

With ``strategy=ddp`` Lightning re-launches the script for every other local rank with the original
argv plus ``hydra.run.dir=...``. Composing that again would draw a new timestamp (a second run
folder), re-resolve ``resume=latest`` or start a multirun sweep of its own. Instead rank 0 writes its
exact config (the run's ``.hydra/config.pickle``) and names it in ``PIPELINE_RUN_CONFIG``; the
children inherit the variable and train with that config, in rank 0's run folder.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import setup_globals
from omegaconf import DictConfig, open_dict, read_write

from pipeline.utils.config import read_run_config

RUN_CONFIG_ENV = "PIPELINE_RUN_CONFIG"


def pin_run_dir(run_dir: Path) -> None:
    """Make ``hydra.run.dir`` the run's real folder: Lightning passes it to the ranks it launches, and
    resolving the ``unique_dir`` interpolation again (resumed runs, sweeps) would create an empty folder."""
    hydra_cfg = HydraConfig.get()
    with read_write(hydra_cfg), open_dict(hydra_cfg):
        hydra_cfg.run.dir = str(run_dir)


def share_with_ranks(run_dir: Path) -> None:
    """Name the run whose saved config ranks launched from this process must train with."""
    os.environ[RUN_CONFIG_ENV] = str(run_dir)


def rank_config() -> DictConfig | None:
    """On a rank > 0 launched by Lightning, the config rank 0 trains with; None otherwise."""
    path = os.environ.get(RUN_CONFIG_ENV)
    if not path or os.environ.get("LOCAL_RANK", "0") == "0":
        return None
    setup_globals()  # the ${hydra:...} and ${now:...} resolvers
    full = read_run_config(Path(path))
    HydraConfig.instance().set_config(full)
    cfg = copy.deepcopy(full)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    return cfg
