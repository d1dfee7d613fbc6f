"""Evaluation under DDP: each process scores its own run of the single-process batches, nothing twice."""

from __future__ import annotations

import torch


def eval_batches(num_items: int, batch_size: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """The evaluation batches of process ``rank``: the single-process batches ``[0, b), [b, 2b), ...``
    dealt out in contiguous runs (``ceil`` or ``floor`` of ``batches / world_size`` per process).

    Unlike ``DistributedSampler`` nothing is padded, so no item counts twice; each batch is one the
    single process scores (batch-dependent losses agree), and states gathered in rank order come back
    in the single-process order. With fewer batches than processes the items are split into
    ``world_size`` near-equal batches instead (none for a process beyond the number of items).

    >>> [eval_batches(7, 2, rank, 2) for rank in range(2)]
    [[[0, 1], [2, 3]], [[4, 5], [6]]]
    """
    if num_items == 0:
        return []
    items = torch.arange(num_items)
    batches = items.split(batch_size) if -(-num_items // batch_size) >= world_size else items.tensor_split(world_size)
    mine = torch.arange(len(batches)).tensor_split(world_size)[rank].tolist()
    return [batches[i].tolist() for i in mine if len(batches[i])]
