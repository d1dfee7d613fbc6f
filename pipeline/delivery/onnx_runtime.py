"""onnxruntime sessions of exported runs, with the metadata the export stored in the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn

from pipeline.utils.errors import UserError


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The export metadata of an ONNX file (``metadata_props`` values are JSON strings)."""
    model = onnx.load(str(path), load_external_data=False)
    try:
        return {prop.key: json.loads(prop.value) for prop in model.metadata_props}
    except (ValueError, RecursionError) as exc:  # the file is a run folder's: data, maybe hostile
        raise UserError(f"{path}: its export metadata is not readable JSON ({type(exc).__name__}); export the run "
                        "again (bin/export.py)") from None


def onnx_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a usable ONNX model (missing, truncated, invalid), or None when it is."""
    if not Path(path).is_file():
        return "no exported model"
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf and checker errors alike mean an unusable file
        return f"not a valid ONNX model, truncated or damaged ({str(exc).strip().splitlines()[0][:160]})"
    return None


class OnnxModel:
    """An onnxruntime CPU session; call it with named numpy inputs, get named numpy outputs."""

    def __init__(self, path: str | Path, threads: int | None = None):
        path = Path(path)
        problem = onnx_problem(path)
        if problem:
            raise UserError(f"{path}: {problem} (export it again: bin/export.py run=<run folder>)")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [node.name for node in self.session.get_inputs()]
        self.output_names = [node.name for node in self.session.get_outputs()]
        self.metadata = read_metadata(path)

    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        feeds = {name: np.ascontiguousarray(inputs[name], dtype=np.float32) for name in self.input_names}
        return dict(zip(self.output_names, self.session.run(None, feeds), strict=True))


class OnnxModule(nn.Module):
    """An exported network as a drop-in ``nn.Module`` (positional inputs in export order) for ``backend=onnx``."""

    def __init__(self, model: OnnxModel):
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        feeds = {name: tensor.detach().cpu().numpy() for name, tensor in zip(self.model.input_names, inputs, strict=True)}
        outputs = [torch.from_numpy(value) for value in self.model(**feeds).values()]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)
