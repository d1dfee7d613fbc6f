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


def sample_inputs(datamodule: Any, spec: dict[str, Any], count: int) -> list[dict[str, torch.Tensor]]:
    """Batches of the first ``count`` validation items (eval preprocessing) for the parity check.

    ``spec["sample_keys"]`` maps ONNX input names to dataset item keys (default: the same names);
    ``spec["parity_batch"]`` = 1 checks item by item (fixed-batch exports), otherwise one stacked batch.
    """
    dataset = datamodule.datasets["val"]
    items = [dataset[i] for i in range(min(count, len(dataset)))]
    keys = spec.get("sample_keys") or {name: name for name in spec["inputs"]}
    if spec.get("parity_batch") == 1:
        return [{name: item[key].unsqueeze(0) for name, key in keys.items()} for item in items]
    return [{name: torch.stack([item[key] for item in items]) for name, key in keys.items()}]


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
            **{"opset_version": OPSET, "dynamo": False, **spec.get("export_options", {})},
        )
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    for key, value in spec.get("metadata", {}).items():
        model.metadata_props.add(key=str(key), value=json.dumps(value))
    onnx.save(model, str(path))


def check_parity(spec: dict[str, Any], path: Path, batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Max absolute difference per output between PyTorch and onnxruntime over the same input batches."""
    session = OnnxModel(path)
    worst = dict.fromkeys(spec["outputs"], 0.0)
    for inputs in batches:
        expected = torch_outputs(spec["module"].eval(), inputs, list(spec["outputs"]))
        actual = session(**{name: tensor.numpy() for name, tensor in inputs.items()})
        for name in expected:
            if expected[name].size:
                worst[name] = max(worst[name], float(np.max(np.abs(expected[name] - actual[name]))))
    return worst


def export_task(task: Any, datamodule: Any, out_dir: Path, samples: int = 16, tolerance: float = 1e-4) -> dict[str, Any]:
    """Export ``task`` to ``out_dir/model.onnx``, check parity on real validation samples, write
    ``out_dir/export.json`` and return that report; ParityError above ``tolerance``."""
    spec = task.export_spec()
    path = Path(out_dir) / MODEL_FILE
    write_onnx(spec, path)
    batches = sample_inputs(datamodule, spec, samples)
    differences = check_parity(spec, path, batches)
    limits = spec.get("parity_tolerance") or {}
    limits = {name: float(limits.get(name, tolerance)) for name in differences}
    report = {
        "model": str(path),
        "size_bytes": path.stat().st_size,
        "inputs": {name: list(tensor.shape[1:]) for name, tensor in spec["inputs"].items()},
        "outputs": list(spec["outputs"]),
        "parity_samples": sum(len(next(iter(batch.values()))) for batch in batches),
        "max_abs_diff": differences,
        "tolerance": limits,
        "metadata": spec.get("metadata", {}),
    }
    (Path(out_dir) / REPORT_FILE).write_text(json.dumps(report, indent=2))
    failed = {name: diff for name, diff in differences.items() if diff > limits[name]}
    if failed:
        name, diff = next(iter(failed.items()))
        raise ParityError(f"{path}: onnxruntime '{name}' differs from PyTorch by {diff:.3g} (> {limits[name]}); see {REPORT_FILE}")
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
