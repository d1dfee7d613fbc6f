"""Group-disjoint stratified splits."""

from __future__ import annotations

import numpy as np

from pipeline.data.splits import split_by_group


def test_groups_never_cross_splits_and_strata_are_kept():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(300), 7)
    strata = np.repeat(rng.integers(0, 6, 300), 7)
    out = split_by_group(groups, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=3, strata=strata)
    sets = {k: set(groups[v]) for k, v in out.items()}
    assert not (sets["train"] & sets["val"] or sets["train"] & sets["test"] or sets["val"] & sets["test"])
    assert sum(len(v) for v in out.values()) == len(groups)
    assert abs(len(sets["val"]) - 30) <= 2
    for split in ("val", "test"):
        assert set(strata[out[split]]) == set(range(6)), "every stratum reaches the small splits"
    again = split_by_group(groups, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=3, strata=strata)
    assert all(np.array_equal(out[k], again[k]) for k in out)
