"""The three ways to resume a run, all continuing in the original folder from its last.ckpt.

- ``--experimental-rerun <run>/.hydra/config.pickle`` (Hydra's rerun of a pickled config),
- ``resume=<run folder>``,
- ``resume=latest`` (the newest run of the experiment the other overrides select).

Unlike Hydra's own rerun, further ``key=value`` overrides are applied on top of the saved config
(for example ``trainer.max_epochs=20`` to train a finished run for longer).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import configure_log, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from pipeline.utils.config import apply_overrides, load_config_pickle, locate_run
from pipeline.utils.errors import UserError

RERUN_FLAG = "--experimental-rerun"


def parse_resume_request(argv: list[str]) -> tuple[str | None, str | None, list[str]]:
    """Split argv into (rerun pickle path, resume value, remaining overrides)."""
    flags = argparse.ArgumentParser(add_help=False, allow_abbrev=False, exit_on_error=False)
    flags.add_argument(RERUN_FLAG)
    try:
        known, rest = flags.parse_known_args(argv)
    except (argparse.ArgumentError, SystemExit):
        raise UserError(f"{RERUN_FLAG}: give the path of a run's .hydra/config.pickle") from None
    overrides = OverridesParser.create().parse_overrides([a for a in rest if "=" in a and not a.startswith("-")])
    resume = next((o.value() for o in overrides if o.key_or_group == "resume"), None)
    return known.experimental_rerun, None if resume is None else str(resume), [a for a in rest if not a.startswith("resume=")]


def run_dir_for(resume: str, overrides: list[str]) -> Path:
    """The run folder that ``resume=<value>`` names; ``latest`` looks in the experiment the overrides select."""
    selection = OverridesParser.create().parse_overrides([o for o in overrides if "=" in o and not o.startswith("-")])
    experiment = next((o.value() for o in selection if o.key_or_group == "experiment"), None)
    return locate_run(resume, experiment, [o.input_line for o in selection if o.key_or_group.startswith("paths.")])


def load_resume_config(pickle_path: Path, run_dir: Path, overrides: list[str]) -> DictConfig:
    """Load the run's pickled config, point it at ``run_dir``, set up Hydra's logging, apply overrides."""
    setup_globals()  # Hydra's ${hydra:...} and ${now:...} resolvers
    full = load_config_pickle(pickle_path)
    OmegaConf.set_readonly(full.hydra, False)  # Hydra froze its node before it was pickled
    with open_dict(full):
        full.hydra.runtime.output_dir = str(run_dir)
    configure_log(full.hydra.job_logging, full.hydra.verbose)
    HydraConfig.instance().set_config(full)
    cfg = copy.deepcopy(full)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
        cfg.resume = str(run_dir)
    return apply_overrides(cfg, [o for o in overrides if not o.startswith("hydra.")])


def resume_config(argv: list[str]) -> DictConfig | None:
    """The config to resume with, or None when argv asks for no resume."""
    pickle_path, resume, overrides = parse_resume_request(argv)
    if pickle_path is None and resume in (None, "", "null"):
        return None
    if pickle_path is not None:
        pickle_file = Path(pickle_path).expanduser().resolve()
        run_dir = pickle_file.parent.parent
    else:
        run_dir = run_dir_for(resume, overrides)
        pickle_file = run_dir / ".hydra" / "config.pickle"
    return load_resume_config(pickle_file, run_dir, overrides)
