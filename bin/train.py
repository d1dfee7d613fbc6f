"""Train a model: ``python bin/train.py [experiment=...] [model=...] [hyp=...] [key=value ...]``.

Resume: ``resume=<run folder>``, ``resume=latest`` or ``--experimental-rerun <run>/.hydra/config.pickle``.
Launched by ``torchrun`` (``trainer=torchrun``), rank 0 composes the config and the other ranks take it.
"""

import sys

from pipeline.runs.ranks import launched_rank_config, rank_config
from pipeline.runs.resume import resume_config
from pipeline.trainers.engine import train
from pipeline.utils.cli import exit_on_user_error, run_hydra
from pipeline.utils.config import register_resolvers


@exit_on_user_error
def main() -> None:
    register_resolvers()
    cfg = rank_config() or launched_rank_config() or resume_config(sys.argv[1:])
    if cfg is not None:
        train(cfg)
        return
    run_hydra("train", train)


if __name__ == "__main__":
    main()
