"""ONNX export of a trained task with its metadata and an onnxruntime parity check on real samples."""

from __future__ import annotations

import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import onnx
import torch

from pipeline.delivery.answers import ExportSpec
from pipeline.delivery.backend import OnnxBackend, TorchBackend, onnx_problem
from pipeline.runs.layout import RunLayout
from pipeline.runs.run import Run
from pipeline.utils.files import replacing, write_json

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
REPORT_FILE = "export.json"
OPSET = 17


class ParityError(RuntimeError):
    """onnxruntime's outputs differ from PyTorch's by more than the tolerance."""


def sample_inputs(datamodule: Any, spec: ExportSpec, count: int) -> list[dict[str, torch.Tensor]]:
    """Batches of the first ``count`` validation items (eval preprocessing) for the parity check: one
    stacked batch, or item by item for fixed-size exports."""
    dataset = datamodule.datasets["val"]
    items = [dataset[i] for i in range(min(count, len(dataset)))]
    if not spec.dynamic:
        return [{name: item[name].unsqueeze(0) for name in spec.inputs} for item in items]
    return [{name: torch.stack([item[name] for item in items]) for name in spec.inputs}]


def write_onnx(spec: ExportSpec, path: Path) -> None:
    """Trace ``spec.module`` to ONNX and store its metadata as JSON strings in metadata_props."""
    path.parent.mkdir(parents=True, exist_ok=True)
    module = spec.module.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about constant shapes are expected
        torch.onnx.export(
            module, tuple(spec.inputs.values()), str(path), input_names=list(spec.inputs),
            output_names=spec.output_names, dynamic_axes=spec.dynamic_axes() or None,
            **{"opset_version": OPSET, "dynamo": False, **spec.export_options},
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    for key, value in spec.onnx_metadata().items():
        model.metadata_props.add(key=str(key), value=json.dumps(value))
    onnx.save(model, str(path))


def check_parity(spec: ExportSpec, path: Path, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Worst difference per output between PyTorch and onnxruntime over the same input batches (the answer's rule)."""
    backends = TorchBackend(spec), OnnxBackend(path)
    worst = dict.fromkeys(spec.output_names, 0.0)
    for inputs in batches:
        for name, value in spec.answer.differences(*(backend(inputs) for backend in backends)).items():
            worst[name] = max(worst[name], value)
    return worst


def export_task(task: Any, datamodule: Any, out_dir: Path, samples: int = 16, tolerance: float = 1e-4,
                layout: RunLayout | None = None) -> dict[str, Any]:
    """Export ``task`` to ``out_dir/model.onnx``, check parity on real validation samples, write
    ``out_dir/export.json`` and return that report; ParityError above ``tolerance``. What the run (``layout``)
    saved for delivery goes into the metadata (a detector's best-F1 score threshold).

    The model is written aside and replaces ``model.onnx`` only once it passed the check: a failed export
    leaves the previous one in place (its report, ``"model": null``, still says what failed)."""
    spec = task.export_spec()
    spec.answer.settle_spec(spec, layout)
    path = Path(out_dir) / MODEL_FILE
    with replacing(path) as staging:
        write_onnx(spec, staging)
        batches = sample_inputs(datamodule, spec, samples)
        differences = check_parity(spec, staging, batches)
        limits = {name: float(spec.parity_tolerance.get(name, tolerance)) for name in differences}
        failed = {name: diff for name, diff in differences.items() if diff > limits[name]}
        report = {
            "model": None if failed else str(path),
            "size_bytes": staging.stat().st_size,
            "inputs": {name: list(tensor.shape[1:]) for name, tensor in spec.inputs.items()},
            "outputs": spec.output_names,
            "parity_samples": sum(len(next(iter(batch.values()))) for batch in batches),
            "max_abs_diff": differences,
            "tolerance": limits,
            "metadata": spec.onnx_metadata(),
        }
        write_json(Path(out_dir) / REPORT_FILE, report)
        if failed:
            name, diff = next(iter(failed.items()))
            raise ParityError(f"{path}: onnxruntime '{name}' differs from PyTorch by {diff:.3g} (> {limits[name]}); "
                              f"not installed, see {REPORT_FILE}")
    return report


def export_run(run: Run, ckpt: str = "best", samples: int = 16, tolerance: float = 1e-4) -> dict[str, Any]:
    """Export a run's checkpoint to ``<run>/export/`` (parity checked on its validation split)."""
    return export_task(run.task(ckpt), run.datamodule(), run.layout.export, samples, tolerance, run.layout)


def ensure_export(run: Run) -> Path:
    """The run's ONNX file, exported first (best checkpoint) when there is none or it cannot be used (truncated)."""
    path = run.layout.export / MODEL_FILE
    problem = onnx_problem(path)
    if problem:
        log.log(logging.WARNING if path.exists() else logging.INFO, "%s: %s; exporting the best checkpoint of %s again",
                path, problem, run.dir)
        export_run(run)
    return path


def export_command(run: Run) -> None:
    """bin/export.py: export, print the size and the parity figures; a parity failure exits with code 1."""
    print(f"Exporting run {run.dir}")
    try:
        report = export_run(run, run.cfg.ckpt, int(run.cfg.samples), float(run.cfg.tolerance))
    except ParityError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)
    diffs = ", ".join(f"{name} {value:.2e}" for name, value in report["max_abs_diff"].items())
    print(f"Wrote {report['model']} ({report['size_bytes'] / 1e6:.3f} MB)")
    print(f"Parity on {report['parity_samples']} validation samples: max abs diff {diffs} (tolerance {report['tolerance']})")
