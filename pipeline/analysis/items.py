"""What a dataset report reads: the items of a built datamodule, one adaptor per dataset kind."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.data.classification import ClassificationDataset
from pipeline.data.detection import VocDetectionDataset
from pipeline.data.formats.verification import VerificationDataset
from pipeline.utils.errors import UserError


@dataclass(frozen=True)
class Item:
    """One image of one split: its file, class name and group (person, identity) when the data has one.

    Detection images carry their boxes, ``(class, x1, y1, x2, y2)`` in pixels, and their label is the
    set of classes they show (``"with_mask+without_mask"``; ``"(no objects)"``)."""

    path: Path
    label: str
    group: str | None
    split: str
    objects: tuple[tuple[str, float, float, float, float], ...] = ()


def classification_items(datamodule) -> list[Item]:
    """Items of a classification datamodule, with the splits and groups it built (same reader, checks and split)."""
    names = datamodule.info.class_names
    return [Item(Path(sample.path), names[label] if (label := sample.labels["label"]) < len(names) else str(label),
                 sample.group, split) for split, dataset in datamodule.datasets.items() for sample in dataset.samples]


def verification_items(datamodule) -> list[Item]:
    """Items of a verification datamodule: ``real``/``fake`` as the class, the identity as the group
    (its index too: pre-split folders may reuse a name for different people)."""
    return [Item(Path(r.path), "fake" if r.is_fake else "real", f"{r.identity} (#{r.identity_index})", split)
            for split, dataset in datamodule.datasets.items() for r in dataset.records]


def detection_items(datamodule) -> list[Item]:
    """Items of a VOC detection datamodule: one per image, with its boxes."""
    items = []
    for split, dataset in datamodule.datasets.items():
        for image in dataset.images:
            objects = tuple((o.name, *o.box) for o in image.objects)
            label = "+".join(sorted({o[0] for o in objects})) or "(no objects)"
            items.append(Item(Path(image.image_path), label, None, split, objects))
    return items


# Dataset class -> how to list its items.
READERS: dict[type, Callable[[Any], list[Item]]] = {
    ClassificationDataset: classification_items,
    VerificationDataset: verification_items,
    VocDetectionDataset: detection_items,
}


def list_items(datamodule) -> list[Item]:
    """The datamodule's items; a UserError for dataset kinds the report does not read yet."""
    kinds = {type(ds) for ds in datamodule.datasets.values()}
    for kind, reader in READERS.items():
        if all(issubclass(k, kind) for k in kinds):
            return reader(datamodule)
    raise UserError(f"inspect: {type(datamodule).__name__} is not supported yet "
                    f"(datasets it reads: {', '.join(k.__name__ for k in READERS)})")
