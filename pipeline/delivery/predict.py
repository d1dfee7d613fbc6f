"""bin/predict.py: a run's (or several runs') prediction over the user's files, with torch or its ONNX export."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from pipeline.delivery.export import ensure_export
from pipeline.delivery.onnx_runtime import OnnxModel, OnnxModule
from pipeline.delivery.runs import Run
from pipeline.utils.contracts import PredictsWithExport
from pipeline.utils.errors import UserError, require_path

BACKENDS = ("torch", "onnx")


def timestamped_dir(run_dir: Path) -> Path:
    """``<run>/predictions/<YYYY-MM-DD_HH-MM-SS>``."""
    return run_dir / "predictions" / datetime.now().strftime("%Y-%m-%d_%H-%M-%S")


def use_onnx(task: Any, run: Run) -> None:
    """Make the task predict with the run's exported ONNX model (exported first if missing): through the
    task's ``use_exported`` hook, or in place of its network when the export is that network."""
    if isinstance(task, PredictsWithExport):
        task.use_exported(OnnxModel(ensure_export(run)))
    elif task.export_spec().module is task.net:
        task.net = OnnxModule(OnnxModel(ensure_export(run)))
    else:
        raise UserError(f"backend=onnx: {type(task).__name__} cannot predict with its export yet; use backend=torch")


def task_options(cfg: Any) -> dict[str, Any]:
    """The ``options.*`` the user set (null ones keep the task's defaults)."""
    return {key: value for key, value in OmegaConf.to_container(cfg.get("options") or {}).items() if value is not None}


def predict(run: Run) -> Path:
    """Run the task's ``predict_files`` for a run (or combine ``run=[a,b,c]``); returns the main output file."""
    cfg = run.cfg
    if OmegaConf.is_missing(cfg, "input"):
        raise UserError("input: give the images to predict on (input=<dir|file|csv>)")
    source = require_path(cfg.input, "input")
    out_dir = Path(cfg.out) if cfg.out else timestamped_dir(run.dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"out: '{out_dir}' is a file; give a folder for the predictions (out=<folder>)")
    if OmegaConf.is_list(cfg.run):
        from pipeline.trainers.classification import predict_combined

        trust = [f"trust_run={str(bool(cfg.get('trust_run'))).lower()}"]
        runs = [run if i == 0 else Run.open(name, trust) for i, name in enumerate(cfg.run)]
        return predict_combined(runs, source, out_dir, ckpt=cfg.ckpt, **task_options(cfg))
    if cfg.backend not in BACKENDS:
        raise UserError(f"backend: '{cfg.backend}' is not one of {list(BACKENDS)}")
    datamodule = run.datamodule()
    task = run.task(cfg.ckpt)
    if cfg.backend == "onnx":
        use_onnx(task, run)
    print(f"Predicting with run {run.dir} ({cfg.backend}) on {source}")
    return task.predict_files(datamodule, source, out_dir, **task_options(cfg))
