"""Train/val/test splits every task shares: seeded group-disjoint stratified splits, pre-split
layouts, users' split files, and the ``results/split.json`` record that reproduces a split.

Vocabulary: an *item* is one sample; its *key* names it in split files (its path relative to the
data root); its *group* is what must never cross splits (a person, an identity, a source image).

Split files (``data.split_file``), any of:

- JSON ``{"train": [...], "val": [...], "test": [...]}`` (what ``results/split.json`` holds), or
  JSON ``{"<entry>": "train" | "val" | "test", ...}``;
- CSV with a ``split`` column and one column naming the entry (``path``, ``file``, ``group``, ...).

An entry is an item key, a group (person id, identity, image) or a file name/stem; it assigns every
item it names. ``valid``/``validation`` mean ``val``. Items no entry names are left out (warned).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.utils.errors import UserError, require_path
from pipeline.utils.files import read_text, text_stream, write_json

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
KEY_COLUMNS = ("path", "file", "filename", "image", "key", "group", "identity", "person", "id")


def canonical_split(name: str, where: str) -> str:
    """``train``/``val``/``test`` for a split name or its aliases (``valid``, ``validation``)."""
    split = SPLIT_ALIASES.get(str(name).strip().lower())
    if split is None:
        raise UserError(f"{where}: split '{name}' is not one of train, val (valid, validation), test")
    return split


def _fraction_text(fractions: dict[str, float]) -> str:
    return "{" + ", ".join(f"{name}: {share:g}" for name, share in fractions.items()) + "}"


def split_counts(n: int, fractions: dict[str, float], what: str = "groups") -> dict[str, int]:
    """How many of ``n`` groups each split gets: largest remainders, at least one per positive fraction.

    Raises a one-line UserError naming ``data.split`` when the fractions cannot be met.
    """
    bad = [name for name, share in fractions.items() if not (share >= 0 and math.isfinite(share * n))]
    if bad:
        raise UserError(f"data.split.{bad[0]}: '{fractions[bad[0]]:g}' is not a share >= 0 of a reasonable size "
                        f"(fractions {_fraction_text(fractions)}, e.g. {{train: 0.7, val: 0.15, test: 0.15}})")
    if sum(fractions.values()) <= 0:
        raise UserError(f"data.split: fractions {_fraction_text(fractions)} must be >= 0 and sum to more than 0")
    total = float(sum(fractions.values()))
    wanted = [name for name, share in fractions.items() if share > 0]
    if n < len(wanted):
        raise UserError(
            f"data.split: fractions {_fraction_text(fractions)} need at least {len(wanted)} {what} "
            f"(one per non-empty split) but the data has {n}; add data or set e.g. data.split.test=0"
        )
    exact = {name: n * share / total for name, share in fractions.items()}
    counts = {name: int(np.floor(value)) for name, value in exact.items()}
    by_remainder = sorted(exact, key=lambda name: exact[name] - counts[name], reverse=True)
    for name in by_remainder[: n - sum(counts.values())]:
        counts[name] += 1
    for name in wanted:
        if counts[name] == 0:
            donor = max(counts, key=counts.get)
            counts[donor] -= 1
            counts[name] = 1
    return counts


def split_by_group(
    groups: Sequence,
    fractions: dict[str, float],
    seed: int,
    strata: Sequence | None = None,
    what: str = "groups",
) -> dict[str, np.ndarray]:
    """Split sample indices so that every group (person, image, identity) falls in exactly one split.

    ``groups[i]`` is the group of sample i; ``strata[i]`` (optional) a label to stratify on, taken per
    group from its first sample. ``fractions`` maps split name to share of groups, e.g.
    ``{"train": 0.8, "val": 0.1, "test": 0.1}``; a split with fraction 0 comes back empty, any other
    gets at least one group. Groups are shuffled within their stratum, strata laid end to end, and
    each position dealt to the split furthest below its share so far: every stratum is spread over
    the splits in proportion, and the counts are exact. Same inputs and seed give the same split.
    """
    groups = np.asarray(groups)
    unique_groups, first_index = np.unique(groups, return_index=True)
    counts = split_counts(len(unique_groups), dict(fractions), what)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(unique_groups))
    if strata is not None:
        group_strata = np.asarray(strata)[first_index].astype(str)
        order = order[np.argsort(group_strata[order], kind="stable")]
    names = list(counts)
    targets = np.array([counts[name] for name in names], dtype=float)
    dealt = np.zeros(len(names))
    split_of_group = np.empty(len(unique_groups), dtype=int)
    n = len(unique_groups)
    for position, group in enumerate(order):
        pick = int(np.argmax(targets * (position + 1) / n - dealt))
        split_of_group[group] = pick
        dealt[pick] += 1
    group_index = np.searchsorted(unique_groups, groups)
    sample_split = split_of_group[group_index]
    return {name: np.flatnonzero(sample_split == i) for i, name in enumerate(names)}


def groups_from_pattern(names: Sequence[str], pattern: str) -> list[str]:
    """The group of each file name from ``data.group_by`` as a regex: its first capture group, else the match."""
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise UserError(f"data.group_by: '{pattern}' is neither a CSV column nor a valid regex ({exc})") from None
    groups = []
    for name in names:
        match = regex.search(name)
        if match is None:
            raise UserError(
                f"data.group_by: regex '{pattern}' does not match the file name '{name}' "
                "(it must find the person or group id in every file name, e.g. '^([^_]+)_')"
            )
        groups.append(match.group(1) if regex.groups else match.group(0))
    return groups


def read_split_file(path: str | Path) -> dict[str, str]:
    """Entry (item key, group or file name) -> ``train``/``val``/``test`` from a JSON or CSV split file."""
    path = require_path(path, "data.split_file", "split file")
    if path.suffix.lower() == ".csv":
        return _read_split_csv(path)
    try:
        raw = json.loads(read_text(path))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise UserError(f"data.split_file: '{path}' is not a readable JSON or CSV file ({exc})") from None
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"data.split_file: '{path}' must hold {{\"train\": [...], \"val\": [...], \"test\": [...]}}")
    assignment: dict[str, str] = {}
    if all(isinstance(value, list) for value in raw.values()):
        for split, entries in raw.items():
            name = canonical_split(split, str(path))
            for entry in entries:
                _assign(assignment, str(entry), name, path)
        return assignment
    for entry, split in raw.items():
        _assign(assignment, str(entry), canonical_split(str(split), f"{path}: '{entry}'"), path)
    return assignment


def _assign(assignment: dict[str, str], entry: str, split: str, path: Path) -> None:
    entry = entry.replace("\\", "/").strip()
    if assignment.get(entry, split) != split:
        raise UserError(f"data.split_file: '{entry}' is in both {assignment[entry]} and {split} in {path}")
    assignment[entry] = split


def _read_split_csv(path: Path) -> dict[str, str]:
    with text_stream(path) as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in reader.fieldnames or []]
        if "split" not in columns or len(columns) < 2:
            raise UserError(f"data.split_file: '{path}' needs a 'split' column and a column naming the item (found {columns})")
        key_column = next((c for c in KEY_COLUMNS if c in columns), next(c for c in columns if c != "split"))
        assignment: dict[str, str] = {}
        for row in reader:
            values = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            if values.get(key_column):
                split = canonical_split(values.get("split", ""), f"{path}:{reader.line_num}")
                _assign(assignment, values[key_column], split, path)
    if not assignment:
        raise UserError(f"data.split_file: '{path}' has no rows")
    return assignment


def assign_by_entries(
    assignment: dict[str, str], keys: Sequence[str], groups: Sequence, source: str
) -> dict[str, np.ndarray]:
    """Split indices from entry -> split: an entry names item keys, else a group, else file names or stems."""
    lookups: list[dict[str, list[int]]] = [{}, {}, {}, {}]
    for i, (key, group) in enumerate(zip(keys, groups, strict=True)):
        lookups[0].setdefault(key, []).append(i)
        lookups[1].setdefault(str(group), []).append(i)
        lookups[2].setdefault(Path(key).name, []).append(i)
        lookups[3].setdefault(Path(key).stem, []).append(i)
    split_of = np.full(len(keys), -1)
    unknown = []
    for entry, split in assignment.items():
        items = next((table[entry] for table in lookups if entry in table), None)
        parts = entry.split("/")
        # An absolute path, or one relative to a parent of data.root: its tail is an item key.
        for start in range(1, len(parts)):
            if items is None:
                items = lookups[0].get("/".join(parts[start:]))
        if items is None:
            unknown.append(entry)
            continue
        code = SPLITS.index(split)
        clash = [i for i in items if split_of[i] not in (-1, code)]
        if clash:
            raise UserError(f"{source}: '{keys[clash[0]]}' is assigned to both {SPLITS[split_of[clash[0]]]} and {split}")
        split_of[items] = code
    if unknown:
        raise UserError(
            f"{source}: '{unknown[0]}' names no item, group or file of the data ({len(unknown)} such entries); "
            "fix the entries or the data root"
        )
    left_out = int((split_of < 0).sum())
    if left_out:
        log.warning("%s: %d of %d items are in no split and are left out", source, left_out, len(keys))
    return {name: np.flatnonzero(split_of == i) for i, name in enumerate(SPLITS)}


def write_split_json(path: str | Path, keys: Sequence[str], indices: dict[str, np.ndarray]) -> None:
    """Write the split as ``{"train": [keys], "val": [...], "test": [...]}`` (sorted, each key once)."""
    payload = {name: sorted({keys[i] for i in indices.get(name, [])}) for name in SPLITS}
    write_json(path, payload, indent=1)  # atomic: another rank reading it never sees half a file


def relative_key(path: Path, root: Path) -> str:
    """The item key of a file: its path relative to the data root (POSIX), else its absolute path."""
    try:
        return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()
    except ValueError:
        return Path(path).resolve().as_posix()


def presplit_folders(root: Path) -> dict[str, Path] | None:
    """``{"train": root/train, "val": root/val|valid|validation, "test": root/test}`` when ``root`` holds
    only split folders (test optional), else None."""
    if not root.is_dir():
        return None
    folders = {p.name.lower(): p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")}
    if "train" not in folders or not set(folders) <= set(SPLIT_ALIASES):
        return None
    found = {SPLIT_ALIASES[name]: path for name, path in sorted(folders.items())}
    if "val" not in found:
        raise UserError(
            f"data.root: '{root}' has train/ but no val/ (or valid/, validation/) folder; add one, "
            "or pass data.split_file to choose the validation items"
        )
    return found


class SplitChooser:
    """One place that decides a dataset's split, for every task, in this order:

    1. ``split_file`` (a user's file, or another run's ``results/split.json``);
    2. ``split_out`` when it already exists (a resumed or re-tested run keeps its split);
    3. the data's own pre-split layout (``presplit``: each item's split name);
    4. a seeded group-disjoint split by the ``split`` fractions.

    The result is written to ``split_out``. train and val must be non-empty; an empty test is
    allowed (the datamodule then tests on val and says so).

    ``retest_of`` (set by ``bin/test.py`` on a data root that is not the run's) names that data: without a split
    of its own (1 or 3, or ``data.split`` given for it) every item is tested, instead of the fractions' test share.
    """

    def __init__(
        self,
        split: dict[str, float] | None,
        seed: int,
        split_file: str | None = None,
        split_out: str | None = None,
    ) -> None:
        self.fractions = dict(split or {"train": 0.7, "val": 0.15, "test": 0.15})
        unknown = sorted(set(self.fractions) - set(SPLITS))
        if unknown:
            raise UserError(f"data.split: '{unknown[0]}' is not one of {', '.join(SPLITS)}")
        self.seed = seed
        self.split_file = split_file
        self.split_out = Path(split_out) if split_out else None
        self.source = ""
        self.retest_of: str | None = None

    def choose(
        self,
        keys: Sequence[str],
        groups: Sequence,
        strata: Sequence | None = None,
        presplit: Sequence[str] | None = None,
        what: str = "groups",
    ) -> dict[str, np.ndarray]:
        """Split indices (``train``/``val``/``test``) of the items named by ``keys``."""
        if not len(keys):
            raise UserError("data.root: no items found to split")
        reuse = self.split_file or (self.split_out if self.split_out and self.split_out.is_file() else None)
        if reuse:
            self.source = f"data.split_file '{reuse}'"
            indices = assign_by_entries(read_split_file(reuse), keys, groups, f"data.split_file '{reuse}'")
        elif presplit is not None:
            self.source = "the data's own train/val/test layout (data.split is not used)"
            indices = {name: np.flatnonzero(np.asarray(presplit) == name) for name in SPLITS}
        elif self.retest_of is not None:
            log.info("testing all %d items of %s: it has no split of its own (train/val/test folders, a split "
                     "file or data.split would give it one)", len(keys), self.retest_of)
            self.source = f"all of {self.retest_of}, tested whole"
            everything = np.arange(len(keys))
            if self.split_out:  # the record says what was tested; train and val hold it too, for class counts
                write_split_json(self.split_out, keys, {"test": everything})
            return {name: everything for name in SPLITS}
        else:
            self.source = f"data.split {_fraction_text(self.fractions)}, seed {self.seed}, by {what}"
            indices = split_by_group(groups, self.fractions, self.seed, strata, what)
        indices = {name: indices.get(name, np.array([], dtype=int)) for name in SPLITS}
        for name in ("train", "val"):
            if not len(indices[name]):
                counts = ", ".join(f"{n} {len(indices[n])}" for n in SPLITS)
                key = f"data.split.{name}" if self.source.startswith("data.split ") else "data.split"
                raise UserError(f"{key}: the {name} split is empty ({counts} items from {self.source})")
        log.info("split from %s: %s", self.source, ", ".join(f"{n} {len(indices[n])}" for n in SPLITS))
        if self.retest_of is not None:
            tested = "test" if len(indices["test"]) else "val (it has no test items)"
            log.info("testing its own %s split: %d of the %d items of %s (from %s)", tested,
                     len(indices["test"]) or len(indices["val"]), len(keys), self.retest_of, self.source)
        if self.split_out and not (reuse and Path(reuse).resolve() == self.split_out.resolve()):
            write_split_json(self.split_out, keys, indices)
        return indices
