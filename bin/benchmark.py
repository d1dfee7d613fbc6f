"""Benchmarks: ``python bin/benchmark.py train [experiment=<x>] [steps=..] [key=value ...]`` compares the
framework's training throughput with a plain PyTorch loop; any other first word goes to the
inference benchmark (``python bin/benchmark.py <what> ...``, see pipeline/benchmarks/inference.py).
"""

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.utils.cli import exit_on_user_error  # noqa: E402
from pipeline.utils.errors import UserError  # noqa: E402


@exit_on_user_error
def main() -> None:
    argv = sys.argv[1:]
    if not argv:
        raise UserError("say what to benchmark: `bin/benchmark.py train [experiment=<x>] ...` or an inference benchmark")
    if argv[0] == "train":
        module, args = "pipeline.benchmarks.train", argv[1:]
    else:
        # Imported only when asked for: the inference benchmark lives in its own module.
        module, args = "pipeline.benchmarks.inference", argv
    importlib.import_module(module).main(args)


if __name__ == "__main__":
    main()
