"""One call interface for a task's exported graph, in PyTorch or in onnxruntime (as ultralytics' AutoBackend):
``backend({input name: tensor or array, ...}) -> {output name: CPU tensor}`` (other keys of the mapping, such as a
batch's, are passed over), with the export's ``metadata`` (``ExportSpec.onnx_metadata``)
and the ``answer`` record type that post-processes its outputs (``pipeline.delivery.answers``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn

from pipeline.delivery.answers import answer_type
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
    """Why ``path`` is not a usable ONNX model (missing, truncated, invalid, exported before answers were named),
    or None when it is."""
    if not Path(path).is_file():
        return "no exported model"
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf and checker errors alike mean an unusable file
        return f"not a valid ONNX model, truncated or damaged ({str(exc).strip().splitlines()[0][:160]})"
    return None if "answer" in read_metadata(path) else "exported by an older version (its metadata names no answer)"


class TorchBackend(nn.Module):
    """The export's module (``ExportSpec.module``) in PyTorch, on whatever device it is moved to."""

    def __init__(self, spec: Any):
        super().__init__()
        self.module = spec.module.eval()
        self.input_names, self.output_names = list(spec.inputs), spec.output_names
        self.metadata, self.answer = spec.onnx_metadata(), spec.answer

    @torch.no_grad()
    def forward(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        device = next(self.module.parameters(), torch.empty(0)).device
        outputs = self.module(*(torch.as_tensor(inputs[name]).to(device) for name in self.input_names))
        outputs = outputs if isinstance(outputs, tuple | list) else (outputs,)
        return {name: out.detach().cpu() for name, out in zip(self.output_names, outputs, strict=True)}


class OnnxBackend:
    """An onnxruntime CPU session of an exported file."""

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
        self.answer = answer_type(self.metadata)

    def __call__(self, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        feeds = {name: np.ascontiguousarray(torch.as_tensor(inputs[name]).cpu().numpy(), dtype=np.float32)
                 for name in self.input_names}
        return {name: torch.from_numpy(out) for name, out in zip(self.output_names, self.session.run(None, feeds), strict=True)}
