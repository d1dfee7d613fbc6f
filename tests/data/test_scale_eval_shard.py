"""Evaluation shards under DDP: every item once, in single-process batches and order, whatever the sizes."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pipeline.data.samplers.eval_shard import eval_batches
from pipeline.data.shapes import ShapesPairsDataModule
from pipeline.utils.errors import UserError


@pytest.mark.parametrize(("items", "batch", "world"), [(10, 3, 2), (11, 3, 2), (12, 3, 4), (7, 2, 3), (5, 8, 2),
                                                       (3, 8, 3), (100, 7, 8), (9, 9, 1)])
def test_shards_cover_every_item_once_in_order(items, batch, world):
    shards = [eval_batches(items, batch, rank, world) for rank in range(world)]
    assert [i for shard in shards for b in shard for i in b] == list(range(items)), "each item once, ranks in order"
    assert all(shard for shard in shards), "every rank evaluates something"
    sizes = [len(shard) for shard in shards]
    assert max(sizes) - min(sizes) <= 1
    single = eval_batches(items, batch)
    if len(single) >= world:
        assert [b for shard in shards for b in shard] == single, "the single process's batches, dealt out"
    else:
        assert all(len(b) <= batch for shard in shards for b in shard)


def _loaders(world: int, val_size: int) -> list[list[list[int]]]:
    shards = []
    for rank in range(world):
        datamodule = ShapesPairsDataModule(train_size=8, val_size=val_size, test_size=val_size, batch_size=4, num_workers=0)
        datamodule.trainer = SimpleNamespace(global_rank=rank, world_size=world)
        datamodule.setup("fit")
        shards.append(list(datamodule.val_dataloader().batch_sampler))
        assert list(datamodule.test_dataloader().batch_sampler) == shards[-1]
    return shards


def test_datamodule_shards_validation_and_test_across_ranks():
    first, second = _loaders(2, 10)
    assert first == [[0, 1, 2, 3], [4, 5, 6, 7]] and second == [[8, 9]]
    with pytest.raises(UserError, match="data: the val split has 1 item"):
        _loaders(2, 1)
