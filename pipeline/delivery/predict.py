"""bin/predict.py: a run's (or several runs') prediction over the user's files through ``trainer.predict``:
one backend (torch or its ONNX export), one post-processor (the export's answer record), one writer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from omegaconf import OmegaConf

from pipeline.callbacks.console import ProgressBar
from pipeline.delivery.backend import OnnxBackend, TorchBackend
from pipeline.delivery.export import ensure_export
from pipeline.delivery.writer import PredictionWriter
from pipeline.runs.layout import RunLayout
from pipeline.runs.run import Run
from pipeline.utils.errors import UserError, require_path

BACKENDS = ("torch", "onnx")


def timestamped_dir(run_dir: Path) -> Path:
    """``<run>/predictions/<YYYY-MM-DD_HH-MM-SS>``."""
    return RunLayout(run_dir).prediction_folder()


def task_options(cfg: Any) -> dict[str, Any]:
    """The ``options.*`` the user set (null ones keep the task's defaults)."""
    return {key: value for key, value in OmegaConf.to_container(cfg.get("options") or {}).items() if value is not None}


class Predictor(pl.LightningModule):
    """What ``trainer.predict`` runs: the backend's outputs on each batch, post-processed into its answer record."""

    def __init__(self, backend: TorchBackend | OnnxBackend, writer: PredictionWriter) -> None:
        super().__init__()
        self.backend, self.writer = backend, writer

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> Any:
        return self.writer.add(self.backend.answer.of(self.backend, batch, self.writer.options), batch)


def open_backend(task: Any, backend: str, run: Run | None, options: dict[str, Any]) -> TorchBackend | OnnxBackend:
    """The task's exported graph in torch, or the run's ONNX export (exported first if missing). An option the
    export's metadata holds (``tta``) shapes the graph: the torch graph is built with it, an ONNX export must have been."""
    spec = task.export_spec()
    unknown = sorted(set(options) - {"batch_size", *spec.answer.OPTIONS})
    if unknown:
        raise UserError(f"options.{unknown[0]}: not an option of {type(task).__name__} (it takes "
                        f"{', '.join(['batch_size', *spec.answer.OPTIONS])})")
    graph = {key: value for key, value in options.items() if key in spec.metadata}
    if backend == "torch":
        for key, value in graph.items():
            setattr(task, key, value)
        spec = task.export_spec()
        spec.answer.settle_spec(spec, run.layout if run is not None else None)  # the metadata an export would hold
        return TorchBackend(spec)
    model = OnnxBackend(ensure_export(run))
    for key, value in graph.items():
        if model.metadata.get(key) != value:
            raise UserError(f"options.{key}: the export was built with {key}={model.metadata.get(key)}; predict with "
                            f"backend=torch for {key}={value}")
    return model


def predict_into(writer: PredictionWriter, task: Any, datamodule: Any, backend: str = "torch", run: Run | None = None,
                 accelerator: str = "cpu") -> None:
    """``trainer.predict`` of ``task`` (its torch graph or its run's ONNX export) on ``writer.source`` into the
    writer, the options handed to the answer and the data; a minimal Trainer: no logger, no checkpoints, one device."""
    model = open_backend(task, backend, run, writer.options)
    writer.options = model.answer.settle_options(writer.options, run.layout if run is not None else None)
    datamodule.predict_on(writer.source, writer.options, task.data_info.input_size)
    writer.start(task.data_info)
    trainer = pl.Trainer(accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                         enable_model_summary=False, use_distributed_sampler=False, callbacks=[ProgressBar()])
    trainer.predict(Predictor(model, writer), datamodule=datamodule, return_predictions=False)


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
        print(f"Predicting with run {each.dir} ({cfg.backend}) on {source}")
        accelerator = "cpu" if cfg.backend == "onnx" else each.cfg.trainer.get("accelerator", "auto")
        predict_into(writer, each.task(cfg.ckpt), each.datamodule(setup=False), cfg.backend, each, accelerator)
    return writer.finish()
