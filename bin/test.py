"""Evaluate a trained run on its test split with the run's own saved config.

``python bin/test.py [run=<folder>|latest] [experiment=<name>] [ckpt=best|last|<path>] [key=value ...]``
With no ``run``, the newest run of ``experiment`` (default: the default experiment) is used;
extra ``key=value`` overrides apply on top of the saved config (e.g. ``data.num_workers=0``).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import OmegaConf, open_dict  # noqa: E402

from pipeline.trainers.engine import evaluate  # noqa: E402
from pipeline.utils.cli import exit_on_user_error  # noqa: E402
from pipeline.utils.config import apply_overrides, register_resolvers  # noqa: E402
from pipeline.utils.errors import UserError  # noqa: E402
from pipeline.utils.runs import resolve_run_dir  # noqa: E402

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
OWN_KEYS = ("run", "ckpt", "experiment")


def parse_args(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Split ``run=``, ``ckpt=``, ``experiment=`` from the config overrides."""
    own, overrides = {}, []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if not sep:
            raise UserError(f"'{arg}': arguments are key=value (run=<folder>, ckpt=best|last|<path>, experiment=<name>)")
        if key in OWN_KEYS:
            own[key] = value
        else:
            overrides.append(arg)
    return own, overrides


@exit_on_user_error
def main() -> None:
    register_resolvers()
    own, overrides = parse_args(sys.argv[1:])
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        selection = [f"experiment={own['experiment']}"] if "experiment" in own else []
        defaults = compose(config_name="train", overrides=selection + [o for o in overrides if o.startswith("paths.")])
    run_dir = resolve_run_dir(own.get("run"), defaults.paths.results_dir, defaults.name)
    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    cfg = apply_overrides(cfg, overrides)
    print(f"Testing run {run_dir}")
    evaluate(cfg, run_dir, own.get("ckpt", "best"))


if __name__ == "__main__":
    main()
