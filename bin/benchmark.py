"""Benchmarks: ``python bin/benchmark.py train [experiment=<x>] [steps=60] [key=value ...]`` compares the
framework's training throughput with a plain PyTorch loop (configs/benchmark.yaml);
``python bin/benchmark.py inference [run=<folder>|latest] [threads=1] [batch=64]`` times a trained run in
PyTorch and onnxruntime (configs/benchmark_inference.yaml).
"""

import sys

from pipeline.utils.cli import exit_on_user_error
from pipeline.utils.errors import UserError

USAGE = "bin/benchmark.py train [experiment=<x>] [key=value ...] | bin/benchmark.py inference [run=<folder>] [...]"


@exit_on_user_error
def main() -> None:
    command = next((arg for arg in sys.argv[1:] if arg in ("train", "inference")), None)
    if command is not None:
        sys.argv.remove(command)
    if command == "train":
        from pipeline.benchmarks.train import main as benchmark_main
    elif command == "inference":
        from pipeline.benchmarks.inference import main as benchmark_main
    else:
        raise UserError(f"say what to benchmark: {USAGE}")
    benchmark_main()


if __name__ == "__main__":
    main()
