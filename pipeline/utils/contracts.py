"""Typed records that travel between layers: what a task exports, how its outputs are read, what it predicts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn as nn


@dataclass
class DataInfo:
    """What a datamodule tells its task, export and service: the classes, the model input ``input_size``
    (channels, height, width) and its normalisation; task-specific facts are optional fields below."""

    task: str
    class_names: list[str]
    input_size: tuple[int, int, int]
    mean: list[float]
    std: list[float]
    class_counts: list[int] | None = None  # training-split count per class (balanced losses, samplers)
    # Attribute heads (face attributes): the trained ``target``, each head's class names and training counts,
    # and the dataset rule that recombines the heads into ``combine_class_names`` (``pipeline/data/combine.py``).
    target: str | None = None
    heads: dict[str, list[str]] = field(default_factory=dict)
    head_class_counts: dict[str, list[int]] = field(default_factory=dict)
    combine: str | None = None
    combine_class_names: list[str] | None = None
    # Glasses: the eye-zone crop's face detection and margin.
    detect_face: bool = False
    face_margin: float = 0.1
    # Detection: the letterbox's pad value.
    pad_value: int = 114
    resize: str | None = None
    # Verification: training identities, the embedding metric, whether val pairs include fakes.
    num_identities: int = 0
    metric: str | None = None
    val_has_fakes: bool | None = None
    shape_names: list[str] | None = None  # siamese shapes

    def __post_init__(self) -> None:
        size = [int(v) for v in self.input_size]
        self.input_size = (3, *size) if len(size) == 2 else tuple(size)  # a bare (height, width): RGB
        self.class_names = [str(name) for name in self.class_names]
        self.mean, self.std = [float(v) for v in self.mean], [float(v) for v in self.std]

    def to_dict(self) -> dict[str, Any]:
        """Plain containers for checkpoints and run files (``torch.load(weights_only=True)``, YAML)."""
        return {**asdict(self), "input_size": list(self.input_size)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataInfo:
        """A saved ``to_dict`` (or an older run's data_info dict); keys no field names are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


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
