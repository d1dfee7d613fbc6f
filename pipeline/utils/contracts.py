"""Typed records that travel between layers: what a task exports, how its outputs are read, what it predicts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn as nn


@dataclass
class Output:
    """One named model output: ``activation`` already applied in the graph (softmax | sigmoid | None for raw
    values: logits, embeddings, boxes), the decision ``threshold`` and the ``classes`` it scores."""

    name: str
    activation: str | None = None
    threshold: float | None = None
    classes: list[str] | None = None


@dataclass
class Route:
    """A task's own HTTP route: ``POST path`` answers ``output``'s decided class under the key ``answer``."""

    path: str
    output: str
    answer: str = "answer"


@dataclass
class ExportSpec:
    """What to write to ONNX and how to read it back: the module and example inputs, its named outputs,
    task routes, free ``metadata`` (preprocessing facts) and the ``kind`` of answer the service gives:
    one image -> ``classes``, ``detection`` boxes or an ``embedding``; two images -> a ``pair`` score."""

    module: nn.Module
    inputs: dict[str, torch.Tensor]
    outputs: list[Output]
    kind: str = "classes"
    metadata: dict[str, Any] = field(default_factory=dict)
    routes: list[Route] = field(default_factory=list)
    # Batch axis 0 of every input and output is dynamic unless the export is fixed-size (``dynamic=False``).
    dynamic: bool = True
    # ONNX input name -> dataset item key for the parity check (default: the same names).
    sample_keys: dict[str, str] | None = None
    parity_tolerance: dict[str, float] = field(default_factory=dict)
    export_options: dict[str, Any] = field(default_factory=dict)

    @property
    def output_names(self) -> list[str]:
        return [output.name for output in self.outputs]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        names = [*self.inputs, *self.output_names] if self.dynamic else []
        return {name: {0: "batch"} for name in names}

    def onnx_metadata(self) -> dict[str, Any]:
        """Everything a reader of the ONNX file needs: the free metadata, the kind, outputs and routes."""
        return {**self.metadata, "kind": self.kind, "outputs": [asdict(o) for o in self.outputs],
                "routes": [asdict(r) for r in self.routes]}


@runtime_checkable
class PredictsWithExport(Protocol):
    """A task that can predict with its exported ONNX model (an ``OnnxModel``) instead of its network."""

    def use_exported(self, model: Any) -> None: ...


def decide(probs: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Class indices: argmax, or ``P(class 1) >= threshold`` for two classes."""
    if probs.shape[1] == 2:
        return (probs[:, 1] >= threshold).long()
    return probs.argmax(dim=1)


def decide_and_report(probs: torch.Tensor, threshold: float | None = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """``decide``'s class indices (``threshold`` None: 0.5) and the probability reported with each: of
    class 1 for two classes (what the threshold is compared with), else of the decided class."""
    decided = decide(probs, 0.5 if threshold is None else threshold)
    reported = probs[:, 1] if probs.shape[1] == 2 else probs.gather(1, decided[:, None]).squeeze(1)
    return decided, reported


@dataclass
class ClassScores:
    """A batch's softmax ``probabilities`` [B, classes] per output (main first), each output's ``classes``,
    the ``threshold`` of two-class outputs and the class whose image paths are ``listed`` (printed)."""

    probabilities: dict[str, torch.Tensor]
    classes: dict[str, list[str]]
    threshold: float = 0.5
    listed: str | None = None


@dataclass
class Detections:
    """Per image of a batch: ``boxes`` [N, 4] (xyxy, original pixels), ``scores``, ``labels`` (into ``classes``)."""

    detections: list[dict[str, torch.Tensor]]
    classes: list[str]


@dataclass
class PairScores:
    """Per pair of a batch: ``scores`` [B] (``metric``: a pair model's ``probability``, or the ``similarity``
    of two embeddings) and the ``threshold`` from which a pair is "same"."""

    scores: torch.Tensor
    threshold: float
    metric: str = "probability"
