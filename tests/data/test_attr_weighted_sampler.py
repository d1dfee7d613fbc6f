"""Inverse-frequency weights and the seeded weighted sampler."""

import numpy as np
import pytest
import torch

from pipeline.data.samplers.weighted import (
    WeightedSampler,
    inverse_frequency_sampler,
    inverse_frequency_weights,
)


def test_weights_are_inverse_class_counts():
    weights = inverse_frequency_weights([0, 0, 0, 2, 1, 0])
    assert weights.dtype == torch.float64
    assert torch.allclose(weights, torch.tensor([0.25, 0.25, 0.25, 1.0, 1.0, 0.25], dtype=torch.float64))


def test_weights_accept_arrays_and_tensors():
    labels = np.array([1, 1, 3])
    assert torch.equal(inverse_frequency_weights(labels), inverse_frequency_weights(torch.from_numpy(labels)))


@pytest.mark.parametrize("labels", [[], [0, -1], [[0, 1]]])
def test_bad_labels_are_rejected(labels):
    with pytest.raises(ValueError):
        inverse_frequency_weights(labels)


def test_sampler_balances_rare_classes():
    labels = np.array([0] * 900 + [1] * 90 + [2] * 10)
    sampler = inverse_frequency_sampler(labels, num_samples=30_000, seed=0)
    drawn = labels[list(sampler)]
    shares = np.bincount(drawn, minlength=3) / len(drawn)
    assert np.allclose(shares, 1 / 3, atol=0.02)


def test_sampler_is_seeded_and_defaults_to_dataset_length():
    labels = [0] * 50 + [1] * 5
    first = list(inverse_frequency_sampler(labels, seed=3))
    assert len(first) == len(labels)
    assert first == list(inverse_frequency_sampler(labels, seed=3))
    assert first != list(inverse_frequency_sampler(labels, seed=4))


def test_repeat_factor_weights_follow_the_rarest_class_of_each_image():
    from pipeline.data.samplers.weighted import repeat_factor_weights

    # class 0 is in 3 of 4 images, classes 1 and 2 in 1 of 4 each, class 3 in none; the last image is empty
    weights = repeat_factor_weights([[0], [0, 1], [0, 0], [2], []], num_classes=4, threshold=1.0)
    rare, common = 5**0.5, (5 / 3) ** 0.5  # shares of the 5 images: 1/5 and 3/5
    expected = torch.tensor([common, rare, common, rare, 1.0], dtype=torch.float64)
    assert torch.allclose(weights, expected)
    # a threshold below every share repeats nothing
    assert torch.equal(repeat_factor_weights([[0], [1]], 2, threshold=0.1), torch.ones(2, dtype=torch.float64))


def test_weighted_sampler_draws_in_proportion_to_given_weights():
    weights = torch.tensor([1.0, 3.0], dtype=torch.float64)
    sampler = WeightedSampler(weights, seed=0, num_samples=20000)
    share = torch.bincount(torch.tensor(list(iter(sampler))), minlength=2).double() / 20000
    assert abs(float(share[1]) - 0.75) < 0.02
