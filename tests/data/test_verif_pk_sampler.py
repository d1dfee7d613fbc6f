"""Tests for the P x K batch sampler."""

import numpy as np
import pytest

from pipeline.data.samplers.pk import PKBatchSampler
from pipeline.utils.errors import UserError

# 10 identities; identity 9 has a single image, identity 8 has two.
LABELS = [i for i in range(8) for _ in range(5)] + [8, 8, 9]


def test_batches_hold_p_identities_of_k_images():
    sampler = PKBatchSampler(LABELS, p=3, k=4, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 10 // 3
    labels = np.asarray(LABELS)
    for batch in batches:
        ids = labels[batch]
        assert len(batch) == 12 and len(set(ids.tolist())) == 3
        assert all(np.sum(ids == i) == 4 for i in set(ids.tolist()))


def test_short_identity_is_drawn_with_replacement_covering_all_images():
    sampler = PKBatchSampler(LABELS, p=10, k=4, seed=0)
    (batch,) = list(sampler)
    from_8 = [i for i in batch if LABELS[i] == 8]
    from_9 = [i for i in batch if LABELS[i] == 9]
    assert set(from_8) == {40, 41} and len(from_8) == 4
    assert from_9 == [42] * 4
    full = [i for i in batch if LABELS[i] == 0]
    assert len(set(full)) == 4  # enough images: no repeats


def test_seeded_and_epoch_dependent():
    a, b = PKBatchSampler(LABELS, 2, 3, seed=5), PKBatchSampler(LABELS, 2, 3, seed=5)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first


def test_ranks_get_different_batches_of_equal_count():
    ranks = [PKBatchSampler(LABELS, p=2, k=2, seed=1, rank=r, world_size=2) for r in range(2)]
    batches = [list(s) for s in ranks]
    assert len(batches[0]) == len(batches[1]) == len(ranks[0]) == 10 // 4
    labels = np.asarray(LABELS)
    ids = [set(labels[np.concatenate(b)].tolist()) for b in batches]
    assert not ids[0] & ids[1]


def test_too_few_identities_is_a_user_error():
    with pytest.raises(UserError, match="lower p"):
        PKBatchSampler(LABELS, p=6, k=2, world_size=2)


def test_passes_deal_every_identity_once_per_pass():
    sampler = PKBatchSampler(LABELS, p=5, k=2, seed=3, passes=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3 * 2 and sampler.batch_size == 10
    labels = np.asarray(LABELS)
    for start in range(0, 6, 2):
        ids = labels[np.concatenate(batches[start : start + 2])]
        assert sorted(set(ids.tolist())) == list(range(10))
    assert list(PKBatchSampler(LABELS, p=5, k=2, seed=3, passes=1)) == batches[:2]
