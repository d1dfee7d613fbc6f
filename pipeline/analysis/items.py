"""What a dataset report reads: the items of a built datamodule, one adaptor per dataset kind."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pipeline.data.classification import ClassificationDataset
from pipeline.utils.errors import UserError


@dataclass(frozen=True)
class Item:
    """One image of one split: its file, class name and group (person, identity) when the data has one."""

    path: Path
    label: str
    group: str | None
    split: str


def boostcamp_person(path: Path) -> str:
    """Boostcamp's person id: the first field of the person folder (``000013_female_Asian_18``)."""
    return path.parent.name.split("_")[0]


# Datamodule class name -> how to read an image's group from its path.
GROUPS: dict[str, Callable[[Path], str]] = {"BoostcampDataModule": boostcamp_person}


def classification_items(datamodule) -> list[Item]:
    """Items of a classification datamodule, with the splits it built (same reader, checks and split)."""
    names = datamodule.info["class_names"]
    group_of = GROUPS.get(type(datamodule).__name__)
    items = []
    for split, dataset in datamodule.datasets.items():
        for sample in dataset.samples:
            label = sample.labels["label"]
            items.append(Item(Path(sample.path), names[label] if label < len(names) else str(label),
                              group_of(Path(sample.path)) if group_of else None, split))
    return items


def list_items(datamodule) -> list[Item]:
    """The datamodule's items; a UserError for dataset kinds the report does not read yet."""
    if all(isinstance(ds, ClassificationDataset) for ds in datamodule.datasets.values()):
        return classification_items(datamodule)
    raise UserError(f"inspect: {type(datamodule).__name__} is not supported yet (classification datasets are)")
