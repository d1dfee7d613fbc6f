"""The drawn examples cover every class of a split sorted by class, and the detection tiles name what they draw."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from pipeline.callbacks.image_grid import (
    ExampleSampler,
    box_draw_list,
    choose_slot,
    class_colour,
    detection_grid,
    truth_and_prediction,
)
from pipeline.trainers.base import keep_examples


def sorted_batches(labels: list[int], batch_size: int):
    """Batches of a split in class-folder order: each item's index, label and a 1-pixel image of its index."""
    for start in range(0, len(labels), batch_size):
        index = torch.arange(start, min(start + batch_size, len(labels)))
        target = torch.tensor(labels[start:start + batch_size])
        yield {"index": index, "image": index.float().view(-1, 1, 1, 1).expand(-1, 3, 2, 2).clone()}, {"target": target}


def test_single_label_split_sorted_by_class_gets_every_class_in_balanced_numbers():
    labels = [c for c, n in enumerate((40, 25, 9, 3, 30)) for _ in range(n)]  # sorted, unbalanced
    sampler = ExampleSampler(16)
    for batch, out in sorted_batches(labels, 8):
        sampler.offer([[t] for t in out["target"].tolist()], lambda i, b=batch: {"index": b["index"][i:i + 1]})
    chosen = sampler.batch()["index"].tolist()
    shown = Counter(labels[i] for i in chosen)
    assert len(chosen) == 16 and set(shown) == set(labels)  # the first 16 would all be class 0
    assert max(shown.values()) - min(shown.values()) <= 1
    assert [labels[i] for i in chosen] == sorted(labels[i] for i in chosen)  # tiles in class order


def test_more_classes_than_tiles_gives_each_tile_its_own_class():
    labels = [c for c in range(20) for _ in range(5)]
    kept: list[frozenset[int]] = []
    for label in labels:
        slot = choose_slot(kept, {label}, 8)
        if slot is not None:
            kept[slot:slot + 1] = [frozenset({label})]
    assert len({min(item) for item in kept}) == 8


def test_images_with_several_classes_cover_the_rare_ones():
    # Images sorted by what they show: 60 with class 0 only, then 5 with 0 and 1, then 2 with class 2.
    images = [[0]] * 60 + [[0, 1]] * 5 + [[2]] * 2
    sampler = ExampleSampler(8)
    for start in range(0, len(images), 4):
        sampler.offer(images[start:start + 4], lambda i, s=start: {"index": torch.tensor([s + i])})
    chosen = [images[i] for i in sampler.batch()["index"].tolist()]
    assert {c for classes in chosen for c in classes} == {0, 1, 2}


def test_images_without_boxes_only_fill_room():
    images = [[]] * 6 + [[0]] * 3 + [[1]] * 3
    sampler = ExampleSampler(4)
    for start in range(0, len(images), 4):
        sampler.offer(images[start:start + 4], lambda i, s=start: {"index": torch.tensor([s + i])})
    assert sorted(len(images[i]) for i in sampler.batch()["index"].tolist()) == [1, 1, 1, 1]
    sampler = ExampleSampler(4)
    sampler.offer([[], [], [0]], lambda i: {"index": torch.tensor([i])})
    assert sampler.chosen_classes() == [frozenset(), frozenset(), frozenset({0})]


def test_a_task_keeps_the_sampled_items_of_every_batch_with_their_outputs():
    """keep_examples: the kept batch's tensors are those of the chosen items (image i shows index i)."""
    labels = [c for c, n in enumerate((30, 12, 6)) for _ in range(n)]
    task = SimpleNamespace(example_count=6, examples={}, samplers={},
                           example_classes=lambda batch, out: [[t] for t in out["target"].tolist()])
    for batch_idx, (batch, out) in enumerate(sorted_batches(labels, 8)):
        keep_examples(task, "val", batch, out, batch_idx, len(out["target"]))
    ex = task.examples["val"]
    assert sorted(Counter(ex["out_target"].tolist()).values()) == [2, 2, 2]
    assert torch.equal(ex["image"][:, 0, 0, 0].long(), ex["index"])
    assert [labels[i] for i in ex["index"].tolist()] == ex["out_target"].tolist()
    # A new epoch starts a new choice.
    batch, out = next(sorted_batches(labels, 8))
    keep_examples(task, "val", batch, out, 0, 8)
    assert task.examples["val"]["out_target"].tolist() == [0] * 6


def test_draw_list_names_each_box_with_its_class_and_the_predictions_with_their_score():
    names = ["with_mask", "without_mask", "mask_weared_incorrect"]
    boxes = torch.tensor([[2.0, 2, 20, 20], [30, 30, 50, 60]])
    truth = box_draw_list(boxes, torch.tensor([1, 2]), names)
    assert [caption for _, caption, _ in truth] == ["without_mask", "mask_weared_incorrect"]
    predicted = box_draw_list(boxes, torch.tensor([0, 1]), names, torch.tensor([0.876, 0.5]))
    assert [caption for _, caption, _ in predicted] == ["with_mask 0.88", "without_mask 0.50"]
    assert truth[0][2] == predicted[1][2] == class_colour(1) and len({class_colour(c) for c in range(3)}) == 3
    assert truth[1][0] == [30, 30, 50, 60]


def test_truth_and_prediction_tile_draws_both_sides_in_class_colours():
    names = ["a", "b"]
    image = torch.zeros(3, 64, 80, dtype=torch.uint8)
    truth = {"boxes": torch.tensor([[10.0, 20, 40, 50]]), "labels": torch.tensor([1])}
    detections = {"boxes": torch.tensor([[5.0, 5, 30, 30]]), "labels": torch.tensor([0]), "scores": torch.tensor([0.9])}
    tile = truth_and_prediction(image, truth, detections, names, min_side=80)
    assert tile.shape[1] == 2 * 80 + 4
    left, right = tile[:, :80], tile[:, 84:]
    assert (left == class_colour(1)).all(axis=-1).any() and not (left == class_colour(0)).all(axis=-1).any()
    assert (right == class_colour(0)).all(axis=-1).any() and not (right == class_colour(1)).all(axis=-1).any()
    grid = detection_grid([tile, tile, tile], names, note="left: truth")
    assert grid.dtype == torch.uint8 and grid.shape[0] == 3 and grid.shape[2] >= 2 * tile.shape[1]
    legend = grid[:, -20:].permute(1, 2, 0).numpy()
    assert all((legend == np.array(class_colour(c))).all(axis=-1).any() for c in range(2))


@pytest.mark.parametrize("count", [1, 3])
def test_choose_slot_appends_while_there_is_room(count):
    assert choose_slot([frozenset({0})] * (count - 1), {0}, count) == count - 1
