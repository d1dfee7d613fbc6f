"""Evaluate a trained run on its test split: ``python bin/test.py [run=<folder>|latest] [experiment=<name>]
[ckpt=best|last|<path>] [key=value ...]`` (config: configs/eval.yaml merged onto the run's saved config).
Everything it writes goes to ``<run>/tests/<checkpoint or data>_<time>/``; the run itself is not changed."""

from pipeline.runs.run import Run, run_command
from pipeline.trainers.engine import evaluate


@run_command("eval")
def main(run: Run) -> None:
    print(f"Testing run {run.dir}")
    evaluate(run, run.cfg.ckpt)


if __name__ == "__main__":
    main()
