"""ShareBatchSampler: positive share per batch, epochs, DDP parts, DataLoader use."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from pipeline.data.samplers.share import ShareBatchSampler
from pipeline.utils.errors import UserError


def _labels(n_pos: int = 300, n_neg: int = 700) -> np.ndarray:
    return np.random.default_rng(0).permutation(np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)])


def test_share_stays_in_range_and_varies():
    labels = _labels(100, 900)  # only 10% positives: the sampler must oversample them
    sampler = ShareBatchSampler(labels, batch_size=20, min_share=0.2, max_share=0.5, seed=1, num_batches=400)
    shares = [labels[batch].mean() for batch in sampler]
    assert len(shares) == len(sampler) == 400
    assert min(shares) >= 0.2 and max(shares) <= 0.5
    assert len(set(shares)) == 7  # every count 4..10 of 20 occurs
    assert 0.3 < np.mean(shares) < 0.4


def test_batches_have_batch_size_unique_indices_and_cover_negatives():
    labels = _labels()
    sampler = ShareBatchSampler(labels, batch_size=32, seed=0)
    batches = list(sampler)
    assert len(batches) == len(labels) // 32
    assert all(len(batch) == len(set(batch)) == 32 for batch in batches)
    negatives = [i for batch in batches for i in batch if labels[i] == 0]
    assert len(negatives) == len(set(negatives))  # no negative repeats before its pool is used up


def test_epochs_differ_but_are_reproducible():
    labels = _labels()
    sampler = ShareBatchSampler(labels, batch_size=16, seed=3)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert first != second
    assert list(sampler) == second
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert list(ShareBatchSampler(labels, batch_size=16, seed=4)) != first


def test_ranks_get_disjoint_parts_of_the_global_sequence():
    labels = _labels()
    whole = list(ShareBatchSampler(labels, batch_size=10, seed=2, num_batches=60))
    parts = [
        list(ShareBatchSampler(labels, batch_size=10, seed=2, num_batches=60, rank=r, world_size=3))
        for r in range(3)
    ]
    assert [len(part) for part in parts] == [20, 20, 20]
    for rank, part in enumerate(parts):
        assert part == whole[rank::3]


def test_dataloader_with_batch_sampler():
    labels = _labels()
    dataset = TensorDataset(torch.arange(len(labels)), torch.as_tensor(labels))
    sampler = ShareBatchSampler(labels, batch_size=25, seed=0)
    loader = DataLoader(dataset, batch_sampler=sampler)
    batches = list(loader)
    assert len(batches) == len(loader) == 40
    assert all(0.2 <= batch[1].float().mean() <= 0.5 for batch in batches)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 4, "min_share": 0.3, "max_share": 0.45}, "no positive count"),
        ({"batch_size": 8, "min_share": 0.6, "max_share": 0.5}, "min_share <= max_share"),
        ({"batch_size": 2000}, "no full batch"),
    ],
)
def test_impossible_settings(kwargs, message):
    with pytest.raises(UserError, match=message):
        ShareBatchSampler(_labels(), **kwargs)


def test_missing_class():
    with pytest.raises(UserError, match="has none"):
        ShareBatchSampler(np.zeros(100, int), batch_size=10)
