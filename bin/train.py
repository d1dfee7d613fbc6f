"""Train a model: ``python bin/train.py [experiment=...] [model=...] [hyp=...] [key=value ...]``.

Resume: ``resume=<run folder>``, ``resume=latest`` or ``--experimental-rerun <run>/.hydra/config.pickle``.
Launched by ``torchrun`` (``trainer=torchrun``), rank 0 composes the config and the other ranks take it.
"""

import sys

from pipeline.runs.run import Run
from pipeline.trainers.engine import fit, train
from pipeline.utils.cli import exit_on_user_error, run_hydra
from pipeline.utils.config import register_resolvers


@exit_on_user_error
def main() -> None:
    register_resolvers()
    run = Run.from_command_line(sys.argv[1:])
    if run is not None:
        fit(run)
        return
    run_hydra("train", train)


if __name__ == "__main__":
    main()
