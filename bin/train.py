"""Train a model: ``python bin/train.py [experiment=...] [model=...] [hyp=...] [key=value ...]``.

Resume: ``resume=<run folder>``, ``resume=latest`` or ``--experimental-rerun <run>/.hydra/config.pickle``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from pipeline.trainers.engine import train  # noqa: E402
from pipeline.utils.cli import check_composition, exit_on_user_error  # noqa: E402
from pipeline.utils.config import register_resolvers  # noqa: E402
from pipeline.utils.ranks import rank_config  # noqa: E402
from pipeline.utils.resume import resume_config  # noqa: E402

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    return exit_on_user_error(train)(cfg)


@exit_on_user_error
def main() -> None:
    register_resolvers()
    argv = sys.argv[1:]
    cfg = rank_config() or resume_config(argv, CONFIG_DIR)
    if cfg is not None:
        train(cfg)
        return
    check_composition(str(CONFIG_DIR), "train", argv)
    hydra_main()


if __name__ == "__main__":
    main()
