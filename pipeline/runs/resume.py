"""The three ways to resume a run, all continuing in the original folder from its last.ckpt.

- ``resume=<run folder>``,
- ``resume=latest`` (the newest usable run of the experiment the other overrides select),
- ``--experimental-rerun <run>/.hydra/config.pickle`` (Hydra's rerun of a pickled config: trusted input).

The first two rebuild the config from the run's YAML files and build only the classes a run folder may
name (``pipeline.runs.trust``) unless ``trust_run=true``. Unlike Hydra's own rerun, further ``key=value``
overrides are applied on top of the saved config (``trainer.max_epochs=20`` trains a finished run longer);
the run's config files are rewritten only once the new config has been built (``train``).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import configure_log, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from pipeline.runs.saved_config import (
    project_job_logging,
)
from pipeline.runs.trust import check_run_config
from pipeline.utils.config import apply_overrides
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
    if isinstance(resume, (bool, list, dict)):
        shown = str(resume).lower() if isinstance(resume, bool) else resume
        raise UserError(f"resume: '{shown}' is not a run; give resume=<run folder> or resume=latest")
    return known.experimental_rerun, None if resume is None else str(resume), [a for a in rest if not a.startswith("resume=")]


def merged_overrides(saved: list[str], new: list[str]) -> list[str]:
    """The run's recorded overrides with the resume's own: a key given again takes its new value."""
    def key(override: str) -> str:
        return override.split("=")[0].lstrip("+~")

    given = {key(o) for o in new}
    return [o for o in saved if key(o) not in given] + list(new)


def load_resume_config(full: DictConfig, run_dir: Path, overrides: list[str], trusted: bool = False) -> DictConfig:
    """Point the run's full config at ``run_dir``, apply overrides and, unless ``trusted``, check what it names and
    log with the project's own logging setup; then set up Hydra's logging. The recorded overrides gain the new ones."""
    setup_globals()  # Hydra's ${hydra:...} and ${now:...} resolvers
    OmegaConf.set_readonly(full.hydra, False)  # Hydra froze its node before it was pickled
    task_overrides = [o for o in overrides if not o.startswith("hydra.")]
    with open_dict(full):
        full.hydra.runtime.output_dir = str(run_dir)
        recorded = [o for o in task_overrides if not o.startswith("trust_run=")]  # trust is given per command
        full.hydra.overrides.task = merged_overrides(list(full.hydra.overrides.task), recorded)
    cfg = copy.deepcopy(full)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
        cfg.resume = str(run_dir)
    cfg = apply_overrides(cfg, task_overrides)
    if not trusted:
        check_run_config(run_dir, cfg)
        if not cfg.trust_run:
            with open_dict(full):
                full.hydra.job_logging = project_job_logging()
    configure_log(full.hydra.job_logging, full.hydra.verbose)
    HydraConfig.instance().set_config(full)
    return cfg
