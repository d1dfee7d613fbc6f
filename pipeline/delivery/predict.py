"""bin/predict.py: a run's (or several runs') prediction over the user's files through ``trainer.predict``,
with torch or its ONNX export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from omegaconf import OmegaConf

from pipeline.callbacks.console import ProgressBar
from pipeline.delivery.export import ensure_export
from pipeline.delivery.onnx_runtime import OnnxModel, OnnxModule
from pipeline.delivery.writer import PredictionWriter
from pipeline.runs.layout import RunLayout
from pipeline.runs.run import Run
from pipeline.utils.contracts import PredictsWithExport
from pipeline.utils.errors import UserError, require_path

BACKENDS = ("torch", "onnx")


def timestamped_dir(run_dir: Path) -> Path:
    """``<run>/predictions/<YYYY-MM-DD_HH-MM-SS>``."""
    return RunLayout(run_dir).prediction_folder()


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


def predict_into(writer: PredictionWriter, task: Any, datamodule: Any, accelerator: str = "cpu") -> None:
    """``trainer.predict`` of ``task`` on ``writer.source`` into the writer, the options handed to the task
    and the data; a minimal Trainer: no logger, no checkpoints, one device."""
    unknown = sorted(set(writer.options) - {"batch_size", *task.PREDICT_OPTIONS})
    if unknown:
        raise UserError(f"options.{unknown[0]}: not an option of {type(task).__name__} (it takes "
                        f"{', '.join(['batch_size', *task.PREDICT_OPTIONS])})")
    task.predict_options = writer.options
    datamodule.predict_on(writer.source, writer.options, task.data_info.input_size)
    trainer = pl.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                         enable_model_summary=False, use_distributed_sampler=False, callbacks=[writer, ProgressBar()])
    trainer.predict(task, datamodule=datamodule, return_predictions=False)


def predict(run: Run) -> Path:
    """``trainer.predict`` with a run (or each of ``run=[a,b,c]``, their heads combined) over ``input``,
    written by the ``PredictionWriter``; returns the main output file."""
    cfg = run.cfg
    if OmegaConf.is_missing(cfg, "input"):
        raise UserError("input: give the images to predict on (input=<dir|file|csv>)")
    source = require_path(cfg.input, "input")
    out_dir = Path(cfg.out) if cfg.out else timestamped_dir(run.dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"out: '{out_dir}' is a file; give a folder for the predictions (out=<folder>)")
    if cfg.backend not in BACKENDS:
        raise UserError(f"backend: '{cfg.backend}' is not one of {list(BACKENDS)}")
    runs = [run]
    if OmegaConf.is_list(cfg.run):
        trust = [f"trust_run={str(bool(cfg.get('trust_run'))).lower()}"]
        runs = [run if i == 0 else Run.open(name, trust) for i, name in enumerate(cfg.run)]
    writer = PredictionWriter(out_dir, source, task_options(cfg))
    for each in runs:  # on the run's accelerator, the CPU for an ONNX session
        task = each.task(cfg.ckpt)
        if cfg.backend == "onnx":
            use_onnx(task, each)
        print(f"Predicting with run {each.dir} ({cfg.backend}) on {source}")
        accelerator = "cpu" if cfg.backend == "onnx" else each.cfg.trainer.get("accelerator", "auto")
        predict_into(writer, task, each.datamodule(setup=False), accelerator)
    return writer.finish()
