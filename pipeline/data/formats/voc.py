"""Pascal VOC detection annotations (one XML per image), as in Kaggle's face-mask-detection dataset.

Conventions (the reader's contract, shared by training, evaluation and prediction):

- Boxes are ``(xmin, ymin, xmax, ymax)`` in continuous 0-based pixel coordinates: VOC writes
  1-based inclusive pixel indices, so ``xmin - 1`` and ``ymin - 1`` are taken and ``xmax``/``ymax``
  kept (the convention of detectron2's VOC reader). Float coordinates are accepted.
- Boxes are clipped to the image; boxes left with no area (< 1 px wide or high) are dropped and
  counted in a warning. A coordinate that is not a finite number (``nan``, ``inf``, ``abc``) makes
  the file bad (UserError naming it, or skipped with a warning under ``skip_bad_files``).
- Every image is decoded while reading, so a corrupt one is named (or skipped) before training.
- ``difficult``/``truncated`` default to False when missing.
- ``<filename>`` may be missing or carry another extension than the file on disk: the image is then
  found by the filename's stem, then by the XML's stem, with any image extension (any case).
- ``<size>`` missing or 0: the size is read from the image file.
- Folders: ``images/`` + ``annotations/`` (Kaggle), or VOC's own ``JPEGImages/`` + ``Annotations/``;
  ``ImageSets/Main/{train,val,test}.txt`` (image ids), when present, give the split.
- Negatives: an XML without ``<object>`` gives an image with no objects; in ``read_voc_dataset`` an
  image with no XML at all is also kept as a negative, with ``annotation_path=None``.
"""

from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from pipeline.data.io import list_images, load_image
from pipeline.data.splits import SplitChooser, relative_key, split_by_group
from pipeline.utils.errors import UserError, require_path
from pipeline.utils.files import read_text

log = logging.getLogger(__name__)

MIN_BOX_SIDE = 1.0
IMAGE_SETS_DIR = "ImageSets/Main"
# Folder names of the original Pascal VOC release, used when the configured ones are absent.
VOC_IMAGES_DIR, VOC_ANNOTATIONS_DIR = "JPEGImages", "Annotations"
# Per-image object-count buckets used to stratify splits: 0, 1, 2-3, 4-7, 8+.
COUNT_BUCKET_EDGES = (1, 2, 4, 8)


@dataclass(frozen=True)
class VocObject:
    """One annotated object: class name, class index, clipped pixel box and VOC flags."""

    name: str
    label: int
    box: tuple[float, float, float, float]
    difficult: bool
    truncated: bool


@dataclass(frozen=True)
class VocImage:
    """One image with its objects; ``annotation_path`` is None for an image that has no XML."""

    image_path: Path
    annotation_path: Path | None
    width: int
    height: int
    objects: tuple[VocObject, ...]


class _ImageIndex:
    """Case-insensitive lookup of the images of one folder by file name and by stem."""

    def __init__(self, image_dir: Path):
        images = list_images(image_dir, recursive=False)
        self.by_name = {p.name.lower(): p for p in images}
        self.by_stem: dict[str, Path] = {}
        for p in images:
            self.by_stem.setdefault(p.stem.lower(), p)

    def find(self, filename: str | None, xml_stem: str) -> Path | None:
        """The image named by ``filename``, else one with its stem, else one with the XML's stem."""
        if filename:
            name = Path(filename).name.lower()
            if name in self.by_name:
                return self.by_name[name]
            if Path(name).stem in self.by_stem:
                return self.by_stem[Path(name).stem]
        return self.by_stem.get(xml_stem.lower())


@dataclass
class _ReadStats:
    """Counts of what the reader dropped, reported once per dataset."""

    degenerate_boxes: int = 0
    unknown_objects: int = 0
    bad_files: int = 0


def _text(node: ET.Element | None, tag: str) -> str | None:
    child = node.find(tag) if node is not None else None
    return child.text.strip() if child is not None and child.text else None


def _flag(node: ET.Element, tag: str) -> bool:
    value = _text(node, tag)
    return value is not None and value not in ("0", "false", "False")


def _number(node: ET.Element | None, tag: str, xml_path: Path) -> float:
    value = _text(node, tag)
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise UserError(f"{xml_path}: <{tag}> is missing or not a finite number ({value!r}); fix the annotation")
    return number


def _image_size(root: ET.Element, image_path: Path, xml_path: Path) -> tuple[int, int]:
    """(width, height) from <size>, or from the image itself when <size> is missing or 0. The image is
    decoded either way: a corrupt one is named here, before training, not mid-epoch."""
    h, w = load_image(image_path).shape[:2]
    size = root.find("size")
    width = int(_number(size, "width", xml_path)) if _text(size, "width") else 0
    height = int(_number(size, "height", xml_path)) if _text(size, "height") else 0
    return (width, height) if width > 0 and height > 0 else (w, h)


def _clipped_box(bndbox: ET.Element | None, width: int, height: int, xml_path: Path) -> tuple[float, ...]:
    if bndbox is None:
        raise UserError(f"{xml_path}: an <object> has no <bndbox>; fix or remove the object")
    xmin, ymin, xmax, ymax = (_number(bndbox, tag, xml_path) for tag in ("xmin", "ymin", "xmax", "ymax"))
    (xmin, xmax), (ymin, ymax) = sorted((xmin, xmax)), sorted((ymin, ymax))
    xmin, ymin = xmin - 1.0, ymin - 1.0
    return (
        float(np.clip(xmin, 0, width)),
        float(np.clip(ymin, 0, height)),
        float(np.clip(xmax, 0, width)),
        float(np.clip(ymax, 0, height)),
    )


def _parse_annotation(
    xml_path: Path,
    images: _ImageIndex,
    class_to_label: dict[str, int],
    unknown_class: str,
    stats: _ReadStats,
) -> VocImage:
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise UserError(f"{xml_path}: malformed annotation XML ({exc}); fix or remove the file") from None
    image_path = images.find(_text(root, "filename"), xml_path.stem)
    if image_path is None:
        raise UserError(
            f"{xml_path}: no image named '{_text(root, 'filename')}' or '{xml_path.stem}.*' in the image folder"
        )
    width, height = _image_size(root, image_path, xml_path)
    objects = []
    for node in root.findall("object"):
        name = _text(node, "name") or ""
        if name not in class_to_label:
            if unknown_class == "skip":
                stats.unknown_objects += 1
                continue
            raise UserError(
                f"{xml_path}: unknown class '{name}' (known: {sorted(class_to_label)}); "
                "add it to the class names or pass unknown_class='skip'"
            )
        box = _clipped_box(node.find("bndbox"), width, height, xml_path)
        if box[2] - box[0] < MIN_BOX_SIDE or box[3] - box[1] < MIN_BOX_SIDE:
            stats.degenerate_boxes += 1
            continue
        objects.append(
            VocObject(name, class_to_label[name], box, _flag(node, "difficult"), _flag(node, "truncated"))
        )
    return VocImage(image_path, xml_path, width, height, tuple(objects))


def _class_index(class_names: Sequence[str], unknown_class: str) -> dict[str, int]:
    if unknown_class not in ("error", "skip"):
        raise UserError(f"unknown_class: '{unknown_class}' is not one of 'error', 'skip'")
    if len(set(class_names)) != len(class_names) or not class_names:
        raise UserError(f"class_names: {list(class_names)} must be a non-empty list without duplicates")
    return {name: i for i, name in enumerate(class_names)}


def _report(stats: _ReadStats, source: Path) -> None:
    if stats.degenerate_boxes:
        log.warning("%s: dropped %d boxes with no area inside the image", source, stats.degenerate_boxes)
    if stats.unknown_objects:
        log.warning("%s: skipped %d objects of unknown classes", source, stats.unknown_objects)
    if stats.bad_files:
        log.warning("%s: skipped %d unreadable annotation or image files", source, stats.bad_files)


def read_voc_annotation(
    xml_path: str | Path,
    image_dir: str | Path,
    class_names: Sequence[str],
    unknown_class: str = "error",
) -> VocImage:
    """Read one VOC XML into a VocImage (see the module docstring for the conventions)."""
    stats = _ReadStats()
    xml_path = Path(xml_path)
    image = _parse_annotation(
        xml_path, _ImageIndex(Path(image_dir)), _class_index(class_names, unknown_class), unknown_class, stats
    )
    _report(stats, xml_path)
    return image


def read_voc_dataset(
    root: str | Path,
    class_names: Sequence[str],
    images_dir: str = "images",
    annotations_dir: str = "annotations",
    skip_bad_files: bool = False,
    unknown_class: str = "error",
) -> list[VocImage]:
    """Read every ``<root>/<annotations_dir>/*.xml`` plus unannotated images (as negatives), sorted by image.

    ``skip_bad_files`` skips (and counts) malformed XML, XML whose image is missing or unreadable,
    instead of raising UserError. ``unknown_class='skip'`` drops objects of classes not in
    ``class_names`` instead of raising.
    """
    root = require_path(root, "data.root", "dataset folder")
    if not (root / images_dir).is_dir() and (root / VOC_IMAGES_DIR).is_dir():
        images_dir = VOC_IMAGES_DIR
    if not (root / annotations_dir).is_dir() and (root / VOC_ANNOTATIONS_DIR).is_dir():
        annotations_dir = VOC_ANNOTATIONS_DIR
    image_dir = require_path(root / images_dir, "data.images_dir", "image folder")
    annotation_dir = require_path(root / annotations_dir, "data.annotations_dir", "annotation folder")
    class_to_label = _class_index(class_names, unknown_class)
    index = _ImageIndex(image_dir)
    stats = _ReadStats()
    xml_files = sorted(p for p in annotation_dir.iterdir() if p.is_file() and p.suffix.lower() == ".xml")
    read_xml = partial(
        _parse_annotation,
        images=index,
        class_to_label=class_to_label,
        unknown_class=unknown_class,
        stats=stats,
    )
    annotated = _read_all(xml_files, read_xml, skip_bad_files, stats)
    claimed = {image.image_path for image in annotated}
    # An image whose XML was skipped is not a negative: its objects are unknown, not absent.
    annotated_stems = {p.stem.lower() for p in xml_files}
    unclaimed = [p for p in index.by_name.values() if p not in claimed and p.stem.lower() not in annotated_stems]
    negatives = _read_all(unclaimed, _unannotated, skip_bad_files, stats)
    _report(stats, root)
    if negatives:
        log.info("%s: %d images without an annotation file kept as negatives", image_dir, len(negatives))
    return sorted(annotated + negatives, key=lambda image: image.image_path.name)


def _read_all(
    paths: list[Path], read: Callable[[Path], VocImage], skip_bad_files: bool, stats: _ReadStats
) -> list[VocImage]:
    """Read each path; a UserError is raised, or counted and skipped with ``skip_bad_files``."""
    images = []
    for path in paths:
        try:
            images.append(read(path))
        except UserError as exc:
            if not skip_bad_files:
                raise
            log.warning("skipping: %s", exc)
            stats.bad_files += 1
    return images


def _unannotated(image_path: Path) -> VocImage:
    height, width = load_image(image_path).shape[:2]
    return VocImage(image_path, None, width, height, ())


def class_counts_per_image(images: Sequence[VocImage], num_classes: int) -> np.ndarray:
    """Object counts per image and class, shape [n_images, n_classes]."""
    counts = np.zeros((len(images), num_classes), dtype=np.int64)
    for i, image in enumerate(images):
        for obj in image.objects:
            counts[i, obj.label] += 1
    return counts


def image_strata(counts: np.ndarray, rare_class: int | None = None, min_members: int = 4) -> np.ndarray:
    """One stratum per image: presence of the rare class x object-count bucket, merged when too small.

    The rare class defaults to the present class with the fewest objects. Within each rare-class
    presence, neighbouring count buckets (0, 1, 2-3, 4-7, 8+) are joined until each stratum holds at
    least ``min_members`` images; a rare class on fewer images than that is not stratified on.
    """
    totals = np.where(counts.sum(axis=0) > 0, counts.sum(axis=0), np.iinfo(np.int64).max)
    rare = int(np.argmin(totals)) if rare_class is None else rare_class
    has_rare = counts[:, rare] > 0
    if has_rare.sum() < min_members:
        has_rare[:] = False
    bucket = np.digitize(counts.sum(axis=1), COUNT_BUCKET_EDGES)
    strata = np.empty(len(counts), dtype=object)
    for presence in (False, True):
        members = has_rare == presence
        merged = _join_sparse_buckets(bucket[members], min_members)
        strata[members] = [f"rare{int(presence)}-group{g}" for g in merged]
    return strata.astype(str)


def _join_sparse_buckets(bucket: np.ndarray, min_members: int) -> np.ndarray:
    """Relabel sorted bucket values so that consecutive buckets join until each group has ``min_members``."""
    values, sizes = np.unique(bucket, return_counts=True)
    group_of, group, filled = {}, 0, 0
    for value, size in zip(values, sizes, strict=True):
        group_of[value] = group
        filled += size
        if filled >= min_members:
            group, filled = group + 1, 0
    if filled and group > 0:
        group_of = {value: min(g, group - 1) for value, g in group_of.items()}
    return np.array([group_of[b] for b in bucket], dtype=int)


def split_voc_images(
    images: Sequence[VocImage],
    num_classes: int,
    fractions: dict[str, float],
    seed: int,
    rare_class: int | None = None,
) -> dict[str, list[VocImage]]:
    """Split images (each in exactly one split), stratified by ``image_strata``; reproducible for a seed."""
    strata = image_strata(class_counts_per_image(images, num_classes), rare_class)
    groups = [image.image_path.name for image in images]
    indices = split_by_group(groups, fractions, seed=seed, strata=strata)
    return {name: [images[i] for i in idx] for name, idx in indices.items()}


def voc_image_sets(root: Path, images: Sequence[VocImage]) -> list[str | None] | None:
    """Each image's split from VOC's ``ImageSets/Main/{train,val,test}.txt`` (one image id per line),
    or None when the dataset has no such lists; images no list names get None (left out)."""
    folder = Path(root) / IMAGE_SETS_DIR
    lists = {name: folder / f"{name}.txt" for name in ("train", "val", "test")}
    if not lists["train"].is_file():
        return None
    if not lists["val"].is_file():
        raise UserError(f"{folder}: has train.txt but no val.txt; add it or pass data.split_file")
    split_of: dict[str, str] = {}
    for name, path in lists.items():
        if path.is_file():
            for line in read_text(path).splitlines():
                if line.strip():
                    split_of[line.split()[0]] = name
    found = [split_of.get(image.image_path.stem) for image in images]
    unknown = set(split_of) - {image.image_path.stem for image in images}
    if unknown:
        raise UserError(f"{folder}: image id '{sorted(unknown)[0]}' has no image ({len(unknown)} such ids)")
    left_out = sum(split is None for split in found)
    if left_out:
        log.warning("%s: %d images are in no list and are left out", folder, left_out)
    log.info("VOC image sets from %s", folder)
    return found


def split_voc(
    splitter: SplitChooser, root: Path, images: Sequence[VocImage], num_classes: int
) -> dict[str, list[VocImage]]:
    """The images of each split: a split file, ``ImageSets/Main`` lists, or a stratified split by image."""
    keys = [relative_key(image.image_path, root) for image in images]
    strata = image_strata(class_counts_per_image(images, num_classes))
    indices = splitter.choose(keys, keys, strata, voc_image_sets(root, images), what="images")
    return {name: [images[i] for i in idx] for name, idx in indices.items()}
