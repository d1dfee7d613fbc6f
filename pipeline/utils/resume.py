"""The three ways to resume a run, all continuing in the original folder from its last.ckpt.

- ``--experimental-rerun <run>/.hydra/config.pickle`` (Hydra's rerun of a pickled config),
- ``resume=<run folder>``,
- ``resume=latest`` (the newest run of the experiment the other overrides select).

Unlike Hydra's own rerun, further ``key=value`` overrides are applied on top of the saved config
(for example ``trainer.max_epochs=20`` to train a finished run for longer).
"""

from __future__ import annotations

import copy
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import configure_log, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from pipeline.utils.config import apply_overrides, load_config_pickle
from pipeline.utils.errors import UserError
from pipeline.utils.runs import resolve_run_dir

RERUN_FLAG = "--experimental-rerun"


def parse_resume_request(argv: list[str]) -> tuple[str | None, str | None, list[str]]:
    """Split argv into (rerun pickle path, resume value, remaining overrides)."""
    pickle_path, resume, rest = None, None, []
    args = iter(argv)
    for arg in args:
        if arg == RERUN_FLAG:
            pickle_path = next(args, None)
            if pickle_path is None:
                raise UserError(f"{RERUN_FLAG}: give the path of a run's .hydra/config.pickle")
        elif arg.startswith(f"{RERUN_FLAG}="):
            pickle_path = arg.split("=", 1)[1]
        elif arg.startswith("resume="):
            resume = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return pickle_path, resume, rest


def run_dir_for(resume: str, overrides: list[str], config_dir: Path) -> Path:
    """The run folder that ``resume=<value>`` names; ``latest`` looks in the selected experiment."""
    if resume != "latest":
        return resolve_run_dir(resume, "", "")
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    return resolve_run_dir("latest", cfg.paths.results_dir, cfg.name)


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


def resume_config(argv: list[str], config_dir: Path) -> DictConfig | None:
    """The config to resume with, or None when argv asks for no resume."""
    pickle_path, resume, overrides = parse_resume_request(argv)
    if pickle_path is None and resume in (None, "", "null"):
        return None
    if pickle_path is not None:
        pickle_file = Path(pickle_path).expanduser().resolve()
        run_dir = pickle_file.parent.parent
    else:
        run_dir = run_dir_for(resume, overrides, config_dir)
        pickle_file = run_dir / ".hydra" / "config.pickle"
    return load_resume_config(pickle_file, run_dir, overrides)
