"""What a datamodule tells its task, export and service (``DataInfo``); what a task exports and answers is
``pipeline.delivery.answers``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any


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

    def export_metadata(self, **extra: Any) -> dict[str, Any]:
        """What every export says of its data (task, input size, normalisation, classes), with ``extra``."""
        return {"task": self.task, "input_size": list(self.input_size), "mean": self.mean, "std": self.std,
                "class_names": list(self.class_names), **extra}

    def to_dict(self) -> dict[str, Any]:
        """Plain containers for checkpoints and run files (``torch.load(weights_only=True)``, YAML)."""
        return {**asdict(self), "input_size": list(self.input_size)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DataInfo:
        """A saved ``to_dict`` (or an older run's data_info dict); keys no field names are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})
