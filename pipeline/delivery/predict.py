"""bin/predict.py: load a run (or several) and call its task's ``predict_files`` on the user's input."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pipeline.delivery.export import ensure_export
from pipeline.delivery.onnx_runtime import OnnxModel, OnnxModule
from pipeline.delivery.runs import build_datamodule, load_run_args, load_task, parse_key_values
from pipeline.utils.errors import UserError, require_path
from pipeline.utils.runs import resolve_run_dir

USAGE = "run=<folder>|latest|[a,b], experiment=<name>, input=<dir|file|csv>, out=<dir>, ckpt=best|last, backend=torch|onnx"
BACKENDS = ("torch", "onnx")


def timestamped_dir(run_dir: Path) -> Path:
    """``<run>/predictions/<YYYY-MM-DD_HH-MM-SS>``."""
    return run_dir / "predictions" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def use_onnx(task: Any, run_dir: Path, cfg: Any) -> None:
    """Make the task predict with the run's exported ONNX model (exported first if missing): through the
    task's ``use_exported`` hook, or in place of its network when the export is that network."""
    if hasattr(task, "use_exported"):
        task.use_exported(OnnxModel(ensure_export(run_dir, cfg)))
    elif task.export_spec()["module"] is task.net:
        task.net = OnnxModule(OnnxModel(ensure_export(run_dir, cfg)))
    else:
        raise UserError(f"backend=onnx: {type(task).__name__} cannot predict with its export yet; use backend=torch")


def pop_input(options: dict[str, str]) -> Path:
    """The ``input=`` path (required, must exist)."""
    if not options.get("input"):
        raise UserError("input: give the images to predict on (input=<dir|file|csv>)")
    return require_path(options.pop("input"), "input")


def predict_combined_runs(argv: Sequence[str]) -> Path:
    """``run=[a,b,c]``: the classifiers' combined prediction (p2-attr's ``predict_combined``)."""
    from pipeline.trainers.classification import predict_combined

    options = dict(parse_key_values(argv, USAGE))
    runs = [resolve_run_dir(name.strip(), "", "") for name in options.pop("run").strip("[]").split(",") if name.strip()]
    source = pop_input(options)
    out_dir = Path(options.pop("out")) if "out" in options else timestamped_dir(runs[0])
    return predict_combined(runs, source, out_dir, **options)


def predict(argv: Sequence[str]) -> Path:
    """Run the task's ``predict_files`` for a run; returns the main output file."""
    if any(arg.startswith("run=[") for arg in argv):
        return predict_combined_runs(argv)
    args = load_run_args(argv, USAGE)
    options = dict(args.options)
    source = pop_input(options)
    out_dir = Path(options.pop("out")) if "out" in options else timestamped_dir(args.run_dir)
    backend = options.pop("backend", "torch")
    if backend not in BACKENDS:
        raise UserError(f"backend: '{backend}' is not one of {list(BACKENDS)}")
    datamodule = build_datamodule(args.cfg)
    task = load_task(args.cfg, args.run_dir, options.pop("ckpt", "best"))
    if backend == "onnx":
        use_onnx(task, args.run_dir, args.cfg)
    print(f"Predicting with run {args.run_dir} ({backend}) on {source}")
    return task.predict_files(datamodule, source, out_dir, **options)
