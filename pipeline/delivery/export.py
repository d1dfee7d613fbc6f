"""ONNX export of a trained task with its metadata and an onnxruntime parity check on real samples."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from pipeline.delivery.onnx_runtime import OnnxModel
from pipeline.delivery.runs import build_datamodule, load_task

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
REPORT_FILE = "export.json"
OPSET = 17


class ParityError(RuntimeError):
    """onnxruntime's outputs differ from PyTorch's by more than the tolerance."""


def sample_inputs(datamodule: Any, names: list[str], count: int) -> dict[str, torch.Tensor]:
    """The first ``count`` items of the validation split (eval preprocessing), stacked per input name."""
    dataset = datamodule.datasets["val"]
    items = [dataset[i] for i in range(min(count, len(dataset)))]
    return {name: torch.stack([item[name] for item in items]) for name in names}


def torch_outputs(module: torch.nn.Module, inputs: dict[str, torch.Tensor], names: list[str]) -> dict[str, np.ndarray]:
    """The module's outputs on ``inputs`` as named numpy arrays."""
    with torch.no_grad():
        outputs = module(*inputs.values())
    outputs = outputs if isinstance(outputs, tuple | list) else (outputs,)
    return {name: out.detach().cpu().numpy() for name, out in zip(names, outputs, strict=True)}


def write_onnx(spec: dict[str, Any], path: Path) -> None:
    """Trace ``spec["module"]`` to ONNX and store ``spec["metadata"]`` as JSON strings in metadata_props."""
    path.parent.mkdir(parents=True, exist_ok=True)
    module = spec["module"].eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about constant shapes are expected
        torch.onnx.export(
            module, tuple(spec["inputs"].values()), str(path), input_names=list(spec["inputs"]),
            output_names=list(spec["outputs"]), dynamic_axes=spec.get("dynamic_axes") or None,
            opset_version=OPSET, dynamo=False,
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    for key, value in spec.get("metadata", {}).items():
        model.metadata_props.add(key=str(key), value=json.dumps(value))
    onnx.save(model, str(path))


def check_parity(spec: dict[str, Any], path: Path, inputs: dict[str, torch.Tensor]) -> dict[str, float]:
    """Max absolute difference per output between PyTorch and onnxruntime on the same inputs."""
    expected = torch_outputs(spec["module"].eval(), inputs, list(spec["outputs"]))
    actual = OnnxModel(path)(**{name: tensor.numpy() for name, tensor in inputs.items()})
    return {name: float(np.max(np.abs(expected[name] - actual[name]))) if expected[name].size else 0.0 for name in expected}


def export_task(task: Any, datamodule: Any, out_dir: Path, samples: int = 16, tolerance: float = 1e-4) -> dict[str, Any]:
    """Export ``task`` to ``out_dir/model.onnx``, check parity on real validation samples, write
    ``out_dir/export.json`` and return that report; ParityError above ``tolerance``."""
    spec = task.export_spec()
    path = Path(out_dir) / MODEL_FILE
    write_onnx(spec, path)
    inputs = sample_inputs(datamodule, list(spec["inputs"]), samples)
    differences = check_parity(spec, path, inputs)
    report = {
        "model": str(path),
        "size_bytes": path.stat().st_size,
        "inputs": {name: list(tensor.shape[1:]) for name, tensor in spec["inputs"].items()},
        "outputs": list(spec["outputs"]),
        "parity_samples": len(next(iter(inputs.values()))),
        "max_abs_diff": differences,
        "tolerance": tolerance,
        "metadata": spec.get("metadata", {}),
    }
    (Path(out_dir) / REPORT_FILE).write_text(json.dumps(report, indent=2))
    worst = max(differences.values(), default=0.0)
    if worst > tolerance:
        raise ParityError(f"{path}: onnxruntime differs from PyTorch by {worst:.3g} (> {tolerance}); see {REPORT_FILE}")
    return report


def export_dir(run_dir: Path) -> Path:
    """Where a run's export lives."""
    return Path(run_dir) / "export"


def export_run(run_dir: Path, cfg: Any, ckpt: str = "best", samples: int = 16, tolerance: float = 1e-4) -> dict[str, Any]:
    """Export a run's checkpoint to ``<run>/export/`` (parity checked on its validation split)."""
    datamodule = build_datamodule(cfg)
    task = load_task(cfg, run_dir, ckpt)
    return export_task(task, datamodule, export_dir(run_dir), samples, tolerance)


def ensure_export(run_dir: Path, cfg: Any) -> Path:
    """The run's ONNX file, exported first (best checkpoint) when it does not exist yet."""
    path = export_dir(run_dir) / MODEL_FILE
    if not path.is_file():
        log.info("No export in %s yet: exporting the best checkpoint first", run_dir)
        export_run(run_dir, cfg)
    return path
