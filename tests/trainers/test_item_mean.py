"""The val/test loss mean: over items (batches weighted by their size), NaN visible."""

import math

import torch

from pipeline.trainers.base import item_mean


def test_val_loss_is_the_mean_over_items_not_over_batches():
    mean = item_mean()
    mean.update(torch.tensor(1.0), 3)  # a batch of 3 items with mean loss 1
    mean.update(torch.tensor(4.0), 1)  # a last batch of 1 item
    assert float(mean.compute()) == (3 * 1.0 + 1 * 4.0) / 4  # 1.75; the mean of batch means would be 2.5


def test_a_nan_loss_shows_in_the_mean():
    mean = item_mean()
    mean.update(torch.tensor(1.0), 3)
    mean.update(torch.tensor(float("nan")), 2)
    assert math.isnan(float(mean.compute()))
