"""A dataset report before training: counts per class and split, groups, image sizes, unusable files,
exact and near-duplicate images within and across splits, group leakage, sample grids; for detection
also objects per class and split, boxes per image and box sizes.

Near duplicates are the same photo again (re-encoded, resized, brightened, slightly edited): two images whose
perceptual hashes (``imagehash.phash``, 64 bits) differ in at most ``near_distance`` bits AND whose pixels agree:
their 32x32 grey thumbnails, each less its mean brightness, differ by at most ``near_pixel_difference`` grey levels
(of 255) on average. The hash alone pairs different faces of one framing (the synthetic sets: 352 pairs across
splits on mask_age_gender, all at 4.8 levels or more); the same photo stays within ~2.5 levels (real photos:
UTKFace copies, video frames). Pairs the hash alone finds are counted as look-alikes, not duplicates. A near
duplicate across splits is a leak, as identical images and groups in several splits are.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imagehash
import matplotlib
import numpy as np
from PIL import Image

from pipeline.analysis.items import Item
from pipeline.data.io import is_image_file
from pipeline.utils.errors import printable
from pipeline.utils.files import atomic_write_text

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the headless backend

SPLIT_ORDER = ("train", "val", "test")
THUMBNAIL = 32  # side of the grey thumbnails whose pixels confirm a perceptual-hash pair


@dataclass
class ImageFacts:
    """What is read from one image file: size, a hash of its pixels, its perceptual hash."""

    width: int
    height: int
    pixels_sha1: str
    phash: int


@dataclass
class DatasetReport:
    """The figures of a dataset report; ``problems`` lists what makes ``bin/inspect_data.py`` fail."""

    counts: dict[str, dict[str, int]]
    groups: dict[str, Any]
    sizes: dict[str, int]
    unusable: list[dict[str, str]]
    exact_duplicates: list[list[dict[str, str]]]
    near_duplicates: list[dict[str, Any]]
    group_leaks: dict[str, list[str]]
    objects: dict[str, Any] | None = None
    lookalikes: int = 0  # perceptual-hash pairs whose pixels differ: not duplicates
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return self.__dict__


def read_facts(path: Path) -> ImageFacts | None:
    """Size and hashes of an image, or None when it does not decode."""
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            pixels = np.asarray(image)
            return ImageFacts(image.width, image.height, hashlib.sha1(pixels.tobytes()).hexdigest(),
                              int(str(imagehash.phash(image)), 16))
    except (OSError, ValueError, SyntaxError):
        return None


def split_sort_key(split: str) -> tuple[int, str]:
    return (SPLIT_ORDER.index(split) if split in SPLIT_ORDER else len(SPLIT_ORDER), split)


def count_by_class(items: list[Item]) -> dict[str, dict[str, int]]:
    """``{class: {split: n, "total": n}}``."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for item in items:
        counts[item.label][item.split] += 1
        counts[item.label]["total"] += 1
    return {label: dict(per_split) for label, per_split in sorted(counts.items())}


def group_stats(items: list[Item]) -> dict[str, Any]:
    """Images per group (person, identity): count of groups, min / median / max images each."""
    per_group = Counter(item.group for item in items if item.group is not None)
    if not per_group:
        return {"groups": 0}
    sizes = np.array(list(per_group.values()))
    return {"groups": len(per_group), "images_min": int(sizes.min()), "images_median": float(np.median(sizes)),
            "images_max": int(sizes.max())}


def group_leaks(items: list[Item]) -> dict[str, list[str]]:
    """Groups found in more than one split -> their splits."""
    splits: dict[str, set[str]] = defaultdict(set)
    for item in items:
        if item.group is not None:
            splits[item.group].add(item.split)
    return {group: sorted(s, key=split_sort_key) for group, s in sorted(splits.items()) if len(s) > 1}


def object_stats(items: list[Item]) -> dict[str, Any] | None:
    """Detection: boxes per class and split, boxes per image, and box sizes (shorter side in pixels)."""
    if not any(item.objects for item in items):
        return None
    per_class: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for item in items:
        for name, *_ in item.objects:
            per_class[name][item.split] += 1
            per_class[name]["total"] += 1
    per_image = np.array([len(item.objects) for item in items])
    sides = np.array([min(x2 - x1, y2 - y1) for item in items for _, x1, y1, x2, y2 in item.objects])
    return {
        "per_class": {name: dict(n) for name, n in sorted(per_class.items())},
        "boxes_per_image": {"min": int(per_image.min()), "median": float(np.median(per_image)),
                            "max": int(per_image.max()), "images_without_boxes": int((per_image == 0).sum())},
        "box_short_side_px": {q: float(np.percentile(sides, int(q[1:]))) for q in ("p5", "p50", "p95")},
        "boxes_under_16px": int((sides < 16).sum()), "boxes_under_32px": int((sides < 32).sum()),
    }


def exact_duplicates(items: list[Item], facts: dict[Path, ImageFacts]) -> list[list[dict[str, str]]]:
    """Sets of items with identical pixels (the same file listed twice counts too)."""
    by_hash: dict[str, list[Item]] = defaultdict(list)
    for item in items:
        if item.path in facts:
            by_hash[facts[item.path].pixels_sha1].append(item)
    return [[{"path": str(i.path), "split": i.split, "label": i.label} for i in same]
            for same in by_hash.values() if len(same) > 1]


def thumbnail(path: Path) -> np.ndarray:
    """The image as a ``THUMBNAIL`` x ``THUMBNAIL`` grey thumbnail (Pillow's antialiased resize) less its mean."""
    with Image.open(path) as image:
        grey = np.asarray(image.convert("L").resize((THUMBNAIL, THUMBNAIL), Image.BILINEAR), dtype=np.float32)
    return grey - grey.mean()


def pixel_difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two mean-less thumbnails, in grey levels (0-255)."""
    return float(np.abs(a - b).mean())


def near_duplicates(items: list[Item], facts: dict[Path, ImageFacts], max_distance: int,
                    max_pixel_difference: float = 4.0) -> tuple[list[dict[str, Any]], int]:
    """Pairs of items whose perceptual hashes differ in at most ``max_distance`` bits and whose thumbnails
    differ by at most ``max_pixel_difference`` grey levels, but whose pixels are not identical (exact copies are
    reported by ``exact_duplicates``); and the number of hash pairs whose thumbnails differ more (look-alikes)."""
    usable = [item for item in items if item.path in facts]
    if len(usable) < 2:
        return [], 0
    hashes = np.array([facts[item.path].phash for item in usable], dtype=np.uint64)
    thumb = functools.cache(thumbnail)  # an image in several pairs is read once
    pairs, lookalikes = [], 0
    for i in range(len(usable) - 1):
        xor = hashes[i] ^ hashes[i + 1 :]
        distance = np.unpackbits(xor.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
        for j in np.nonzero(distance <= max_distance)[0]:
            a, b = usable[i], usable[i + 1 + j]
            if facts[a.path].pixels_sha1 == facts[b.path].pixels_sha1:
                continue
            difference = pixel_difference(thumb(a.path), thumb(b.path))
            if difference > max_pixel_difference:
                lookalikes += 1
                continue
            pairs.append({"a": str(a.path), "b": str(b.path), "splits": [a.split, b.split],
                          "distance": int(distance[j]), "pixel_difference": round(difference, 2)})
    return pairs, lookalikes


def unusable_files(items: list[Item], facts: dict[Path, ImageFacts]) -> list[dict[str, str]]:
    """Image files next to the dataset's items that no split uses (unlabelled, or dropped by the
    reader's checks) and listed items that do not decode."""
    used = {item.path for item in items}
    listed_bad = [{"path": str(p), "reason": "unreadable"} for p in sorted(used) if p not in facts]
    root = Path(os.path.commonpath([p.parent for p in used])) if used else None
    if root is None or not root.is_dir():
        return listed_bad
    unused = [p for p in sorted(root.rglob("*")) if p.is_file() and is_image_file(p) and p not in used]
    return listed_bad + [{"path": str(p), "reason": unused_reason(p)} for p in unused]


def unused_reason(path: Path) -> str:
    """Why an image file next to the dataset is in no split, as far as the file itself tells."""
    if path.name.startswith("."):
        return "hidden file (e.g. macOS ._ metadata), skipped by the reader"
    return "unreadable" if read_facts(path) is None else "not in any split (unlabelled or filtered by the reader)"


def build_report(items: list[Item], near_distance: int = 2, fail_on_near_duplicates: bool = True,
                 near_pixel_difference: float = 4.0) -> tuple[DatasetReport, dict[Path, ImageFacts]]:
    """All figures of the report for ``items`` (reads every image once; the thumbnails of hash pairs again).
    ``fail_on_near_duplicates=False`` lists near duplicates across splits without counting them as a problem."""
    facts = {}
    for item in items:
        if item.path not in facts:
            read = read_facts(item.path)
            if read is not None:
                facts[item.path] = read
    sizes = Counter(f"{f.width}x{f.height}" for f in facts.values())
    exact = exact_duplicates(items, facts)
    near, lookalikes = near_duplicates(items, facts, near_distance, near_pixel_difference)
    report = DatasetReport(
        counts=count_by_class(items), groups=group_stats(items), sizes=dict(sizes.most_common()),
        unusable=unusable_files(items, facts), exact_duplicates=exact, near_duplicates=near,
        group_leaks=group_leaks(items), objects=object_stats(items), lookalikes=lookalikes,
    )
    across = [d for d in exact if len({i["split"] for i in d}) > 1]
    if across:
        report.problems.append(f"{len(across)} set(s) of identical images across splits")
    if report.group_leaks:
        report.problems.append(f"{len(report.group_leaks)} group(s) (person, identity) in more than one split")
    near_across = [p for p in near if p["splits"][0] != p["splits"][1]]
    if fail_on_near_duplicates and near_across:
        report.problems.append(f"{len(near_across)} near-duplicate pair(s) across splits (the same photo re-encoded "
                               "or edited)")
    return report, facts


def plot_counts(report: DatasetReport, path: Path) -> None:
    """Items per class, one bar per split."""
    labels = list(report.counts)
    splits = sorted({s for c in report.counts.values() for s in c if s != "total"}, key=split_sort_key)
    fig, ax = plt.subplots(figsize=(max(6, 0.45 * len(labels) + 2), 4), dpi=100)
    width = 0.8 / max(1, len(splits))
    for k, split in enumerate(splits):
        ax.bar(np.arange(len(labels)) + k * width, [report.counts[c].get(split, 0) for c in labels], width, label=split)
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2, [printable(str(c)) for c in labels], rotation=90, fontsize=8)
    ax.set_ylabel("images")
    ax.set_title("items per class and split")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_groups_and_sizes(items: list[Item], facts: dict[Path, ImageFacts], path: Path) -> None:
    """Histogram of images per group and scatter of image sizes."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    per_group = Counter(item.group for item in items if item.group is not None)
    if per_group:
        left.hist(list(per_group.values()), bins=range(1, max(per_group.values()) + 2), align="left")
    left.set_title("images per person / identity")
    left.set_xlabel("images")
    left.set_ylabel("groups")
    sizes = np.array([[f.width, f.height] for f in facts.values()])
    if len(sizes):
        right.scatter(sizes[:, 0], sizes[:, 1], s=8, alpha=0.4)
    right.set_title("image sizes")
    right.set_xlabel("width (px)")
    right.set_ylabel("height (px)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_objects(items: list[Item], path: Path) -> None:
    """Detection: histogram of boxes per image and box width against height."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    per_image = [len(item.objects) for item in items]
    left.hist(per_image, bins=range(0, max(per_image) + 2), align="left")
    left.set_title("boxes per image")
    left.set_xlabel("boxes")
    left.set_ylabel("images")
    for name in sorted({o[0] for item in items for o in item.objects}):
        boxes = np.array([o[1:] for item in items for o in item.objects if o[0] == name])
        right.scatter(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1], s=6, alpha=0.4, label=name)
    right.set(xscale="log", yscale="log", title="box sizes", xlabel="width (px)", ylabel="height (px)")
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_samples(items: list[Item], path: Path, per_class: int = 6) -> None:
    """A few training images of every class, one row per class."""
    by_class: dict[str, list[Item]] = defaultdict(list)
    for item in sorted(items, key=lambda i: (split_sort_key(i.split), str(i.path))):
        if len(by_class[item.label]) < per_class:
            by_class[item.label].append(item)
    labels = sorted(by_class)
    fig, axes = plt.subplots(len(labels), per_class, figsize=(1.3 * per_class + 1.5, 1.3 * len(labels)), dpi=100,
                             squeeze=False)
    for row, label in enumerate(labels):
        for col in range(per_class):
            ax = axes[row][col]
            ax.axis("off")
            if col < len(by_class[label]):
                item = by_class[label][col]
                with Image.open(item.path) as image:
                    ax.imshow(image.convert("RGB"))
                for _, x1, y1, x2, y2 in item.objects:
                    ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="lime", linewidth=0.8))
        axes[row][0].text(-0.1, 0.5, printable(str(label)), transform=axes[row][0].transAxes, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(left=0.25, wspace=0.05, hspace=0.1)
    fig.savefig(path)
    plt.close(fig)


def write_markdown(report: DatasetReport, path: Path, title: str) -> None:
    """``data_report.md``: the tables and the figures' links."""
    splits = sorted({s for c in report.counts.values() for s in c if s != "total"}, key=split_sort_key)
    lines = [f"# {title}", "", "## Items per class and split", "", "| class | " + " | ".join(splits) + " | total |",
             "|---|" + "---:|" * (len(splits) + 1)]
    for label, per_split in report.counts.items():
        lines.append(f"| {label} | " + " | ".join(str(per_split.get(s, 0)) for s in splits) + f" | {per_split['total']} |")
    lines += ["", "![items per class](counts.png)", ""]
    lines += objects_markdown(report.objects, splits) if report.objects else []
    lines += ["## Groups and image sizes", "",
              f"groups (person / identity): {json.dumps(report.groups)}", "",
              "image sizes: " + ", ".join(f"{size} ({n})" for size, n in report.sizes.items()), "",
              "![groups and sizes](groups_sizes.png)", "", "## Problems", ""]
    lines += [f"- **{p}**" for p in report.problems] or ["none"]
    lines += ["", f"- group leaks: {len(report.group_leaks)}"]
    lines += [f"  - {group}: {', '.join(splits_)}" for group, splits_ in list(report.group_leaks.items())[:20]]
    lines += [f"- identical image sets: {len(report.exact_duplicates)}"]
    lines += ["  - " + ", ".join(f"{d['path']} ({d['split']})" for d in dup) for dup in report.exact_duplicates[:20]]
    across = sum(p["splits"][0] != p["splits"][1] for p in report.near_duplicates)
    lines += [f"- near-duplicate pairs (perceptual hash and pixels agree): {len(report.near_duplicates)}, "
              f"{across} across splits"]
    lines += [f"  - {p['a']} ({p['splits'][0]}) ~ {p['b']} ({p['splits'][1]}), hash distance {p['distance']}, "
              f"pixel difference {p['pixel_difference']}" for p in sorted(
                  report.near_duplicates, key=lambda p: p["splits"][0] == p["splits"][1])[:20]]
    lines += [f"- look-alikes (perceptual hash only, pixels differ; not duplicates): {report.lookalikes}"]
    lines += [f"- unusable files: {len(report.unusable)}"]
    lines += [f"  - {u['path']}: {u['reason']}" for u in report.unusable[:20]]
    lines += ["", "## Samples per class", "", "![samples](samples.png)", ""]
    atomic_write_text(path, "\n".join(lines))


def objects_markdown(objects: dict[str, Any], splits: list[str]) -> list[str]:
    """The detection section of ``data_report.md``."""
    lines = ["## Objects (boxes) per class and split", "", "| class | " + " | ".join(splits) + " | total |",
             "|---|" + "---:|" * (len(splits) + 1)]
    for name, per_split in objects["per_class"].items():
        lines.append(f"| {name} | " + " | ".join(str(per_split.get(s, 0)) for s in splits) + f" | {per_split['total']} |")
    sides = objects["box_short_side_px"]
    return lines + ["", f"boxes per image: {json.dumps(objects['boxes_per_image'])}", "",
                    f"box shorter side (px): 5% {sides['p5']:.0f}, median {sides['p50']:.0f}, 95% {sides['p95']:.0f}; "
                    f"{objects['boxes_under_16px']} boxes under 16 px, {objects['boxes_under_32px']} under 32 px", "",
                    "![boxes](boxes.png)", ""]


def write_report(items: list[Item], out_dir: Path, title: str, near_distance: int = 2,
                 fail_on_near_duplicates: bool = True, near_pixel_difference: float = 4.0) -> DatasetReport:
    """Build the report and write ``data_report.md``, ``data_report.json`` and the PNGs into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    report, facts = build_report(items, near_distance, fail_on_near_duplicates, near_pixel_difference)
    atomic_write_text(out_dir / "data_report.json", json.dumps(report.to_json(), indent=2))
    plot_counts(report, out_dir / "counts.png")
    plot_groups_and_sizes(items, facts, out_dir / "groups_sizes.png")
    plot_samples(items, out_dir / "samples.png")
    if report.objects:
        plot_objects(items, out_dir / "boxes.png")
    write_markdown(report, out_dir / "data_report.md", title)
    return report
