"""Reproducible, resumable and sharded batch order.

Each epoch's order is ``randperm`` seeded by ``seed + epoch`` (the same on every process); the
global batch ``batch_size × world_size`` is cut from it and process ``rank`` takes its slice.
The position (epoch, batch within epoch) is all a checkpoint needs to continue with exactly the
batches an uninterrupted run would have seen. Per-item ``repeats`` put an item that many times
into each epoch's permutation (oversampling without duplicating the data). The DataLoader gets its
own generator so creating an iterator never consumes the global torch RNG (which a checkpoint
restores separately).
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset


class ShardedOrder:
    def __init__(self, num_items: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1,
                 repeats: Sequence[int] | None = None):
        if num_items < 1:
            raise ValueError("dataset is empty: no items to train on")
        self.items = torch.arange(num_items)
        if repeats is not None:
            counts = torch.as_tensor(list(repeats), dtype=torch.long)
            if counts.shape != (num_items,) or bool((counts < 1).any()):
                raise ValueError(f"repeats: expected {num_items} integers >= 1 (one per item), got "
                                 f"{counts.numel()} with minimum {int(counts.min()) if counts.numel() else None}")
            self.items = torch.repeat_interleave(self.items, counts)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.global_batch = batch_size * world_size
        # Small datasets: repeat permutations so one epoch holds at least one global batch.
        slots = len(self.items)
        self.permutations = math.ceil(self.global_batch / slots)
        self.batches_per_epoch = (slots * self.permutations) // self.global_batch

    def epoch_order(self, epoch: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        return torch.cat([self.items[torch.randperm(len(self.items), generator=g)] for _ in range(self.permutations)])

    def batches(self, epoch: int, start: int = 0) -> list[list[int]]:
        order = self.epoch_order(epoch)
        out = []
        for b in range(start, self.batches_per_epoch):
            first = b * self.global_batch + self.rank * self.batch_size
            out.append(order[first: first + self.batch_size].tolist())
        return out


class BatchStream:
    """Endless iterator of collated batches over epochs, with ``state_dict`` for resuming."""

    def __init__(self, dataset: Dataset, order: ShardedOrder, collate_fn: Callable | None = None,
                 num_workers: int = 0):
        self.dataset, self.order, self.collate_fn, self.num_workers = dataset, order, collate_fn, num_workers
        self.epoch, self.position = 0, 0  # position = batches already consumed in this epoch
        self._iter: Iterator | None = None

    def _open(self) -> None:
        loader = DataLoader(
            self.dataset, batch_sampler=self.order.batches(self.epoch, self.position),
            collate_fn=self.collate_fn, num_workers=self.num_workers,
            generator=torch.Generator().manual_seed(0), persistent_workers=False,
        )
        self._iter = iter(loader)

    def __iter__(self):
        return self

    def __next__(self):
        if self.position >= self.order.batches_per_epoch:
            self.epoch, self.position, self._iter = self.epoch + 1, 0, None
        if self._iter is None:
            self._open()
        batch = next(self._iter)
        self.position += 1
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position, self._iter = int(state["epoch"]), int(state["position"]), None
