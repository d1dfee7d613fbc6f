"""Benchmarks: ``python bin/benchmark.py train [experiment=<x>] [steps=60] [key=value ...]`` compares the
framework's training throughput with a plain PyTorch loop (configs/benchmark.yaml);
``python bin/benchmark.py inference [run=<folder>|latest] [threads=1] [batch=64]`` times a trained run in
PyTorch and onnxruntime (configs/benchmark_inference.yaml);
``python bin/benchmark.py gpu [photos=<folders>] [steps=40]`` is the GPU check: img/s, GPU busy share, peak
memory and data wait over fp32/bf16, channels_last and torch.compile, 1 GPU and DDP (configs/benchmark_gpu.yaml;
one line and exit 0 on a machine without CUDA).
"""

import importlib
import sys

from pipeline.utils.cli import exit_on_user_error
from pipeline.utils.errors import UserError

COMMANDS = {"train": "pipeline.benchmarks.train", "inference": "pipeline.benchmarks.inference",
            "gpu": "pipeline.benchmarks.gpu"}


@exit_on_user_error
def main() -> None:
    command = next((arg for arg in sys.argv[1:] if arg in COMMANDS), None)
    if command is None and any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(__doc__.strip())  # each benchmark's own options: bin/benchmark.py <train|inference> --help
        return
    if command is None:
        raise UserError("say what to benchmark: bin/benchmark.py train [experiment=<x>] | inference [run=<folder>] | gpu")
    sys.argv.remove(command)
    importlib.import_module(COMMANDS[command]).main()


if __name__ == "__main__":
    main()
