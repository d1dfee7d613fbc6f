"""Seeded, group-disjoint, stratified dataset splits (by person, by source image, by identity)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import train_test_split


def _stratify_or_none(labels: np.ndarray, test_fraction: float) -> np.ndarray | None:
    """Labels usable for stratification, or None when a class is too small to appear in both parts."""
    _, counts = np.unique(labels, return_counts=True)
    n = len(labels)
    n_test = int(np.ceil(test_fraction * n))
    if counts.min() < 2 or n_test < len(counts) or n - n_test < len(counts):
        return None
    return labels


def split_by_group(
    groups: Sequence,
    fractions: dict[str, float],
    seed: int,
    strata: Sequence | None = None,
) -> dict[str, np.ndarray]:
    """Split sample indices so that every group (person, image, identity) falls in exactly one split.

    ``groups[i]`` is the group of sample i; ``strata[i]`` (optional) a label to stratify on, taken per
    group from its first sample. ``fractions`` maps split name to share of groups, e.g.
    ``{"train": 0.8, "val": 0.1, "test": 0.1}``; splits with fraction 0 come back empty.
    Returns split name -> sorted sample indices. Same inputs and seed give the same split.
    """
    groups = np.asarray(groups)
    unique_groups, first_index = np.unique(groups, return_index=True)
    group_strata = np.asarray(strata)[first_index] if strata is not None else None
    names = list(fractions)
    total = float(sum(fractions.values()))
    if total <= 0:
        raise ValueError("split fractions must sum to a positive number")
    remaining = np.arange(len(unique_groups))
    remaining_share = 1.0
    assigned: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        share = fractions[name] / total
        if i == len(names) - 1:
            assigned[name] = remaining
            break
        if share <= 0:
            assigned[name] = np.array([], dtype=int)
            continue
        part = share / remaining_share
        if part >= 1.0 or len(remaining) < 2:
            assigned[name], remaining = remaining, np.array([], dtype=int)
        else:
            labels = group_strata[remaining] if group_strata is not None else None
            stratify = _stratify_or_none(labels, part) if labels is not None else None
            chosen, remaining = train_test_split(
                remaining, train_size=part, random_state=seed + i, stratify=stratify
            )
            assigned[name] = chosen
        remaining_share -= share
    group_to_split = {}
    for name, idx in assigned.items():
        for g in unique_groups[idx]:
            group_to_split[g] = name
    out = {name: [] for name in names}
    for sample, g in enumerate(groups):
        out[group_to_split[g]].append(sample)
    return {name: np.asarray(sorted(idx), dtype=int) for name, idx in out.items()}
