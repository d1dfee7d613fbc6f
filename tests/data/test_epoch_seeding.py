"""EpochSeededDataset: an item's augmentation depends only on (seed, epoch, index), and the transforms of
one Compose draw independently of each other."""

from __future__ import annotations

import pickle

import albumentations as A
import numpy as np

from pipeline.data.base import EpochSeededDataset

# An image whose horizontal and vertical mirrors differ from it and from each other.
IMAGE = np.arange(2 * 3, dtype=np.uint8).reshape(2, 3, 1)


class Images:
    def __init__(self, n: int) -> None:
        self.n = n
        self.transform = A.Compose([A.HorizontalFlip(p=0.5), A.VerticalFlip(p=0.5)])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[bool, bool]:
        out = self.transform(image=IMAGE)["image"]
        flipped_h = np.array_equal(out, IMAGE[:, ::-1]) or np.array_equal(out, IMAGE[::-1, ::-1])
        flipped_v = np.array_equal(out, IMAGE[::-1]) or np.array_equal(out, IMAGE[::-1, ::-1])
        return flipped_h, flipped_v


def test_items_repeat_per_epoch_and_transforms_draw_independently():
    dataset = EpochSeededDataset(Images(400), seed=3)
    first = [dataset[i] for i in range(400)]
    assert [dataset[i] for i in reversed(range(400))][::-1] == first, "an item must not depend on the order"
    dataset.epoch[0] = 1
    assert [dataset[i] for i in range(400)] != first, "another epoch draws anew"
    # Two p=0.5 transforms: each fires about half the time, and one without the other about half the time
    # (albumentations' set_random_seed seeds both alike, so they would always fire together).
    horizontal, vertical = np.array(first).T
    assert 0.4 < horizontal.mean() < 0.6 and 0.4 < vertical.mean() < 0.6
    assert 0.4 < (horizontal != vertical).mean() < 0.6


def test_a_copy_in_a_worker_and_another_seed():
    """A worker's copy (pickled) draws each item as the original does, also after something reseeded the
    transform itself; another seed draws anew."""
    dataset = EpochSeededDataset(Images(200), seed=3)
    first = [dataset[i] for i in range(200)]
    copied = pickle.loads(pickle.dumps(dataset))
    copied.dataset.transform.set_random_seed(0)  # e.g. a user's Compose(seed=...): replaced at the next item
    assert [copied[i] for i in range(200)] == first
    assert [EpochSeededDataset(Images(200), seed=4)[i] for i in range(200)] != first
