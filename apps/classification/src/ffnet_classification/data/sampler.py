"""Training batches as a pure function of (seed, epoch), so a run resumes exactly, also mid-epoch.

A resumed run asks for epoch ``e`` from micro-batch ``k`` on (metamixer.train.loop). Two things must then match
the uninterrupted run: the order of the images, and each image's augmentation. A shuffling DataLoader gets the
first right only from the epoch start, and the second not at all with workers (a worker's RNG stream depends on
which batches it loaded before). So :class:`EpochSampler` draws, from a generator seeded by (seed, epoch), both the
permutation and one augmentation seed per image; :class:`SeededSamples` seeds torch's RNG with that seed around
each image's transform. Batches from ``k`` on are then identical whatever the worker count, and skipping the
first ``k`` batches costs nothing (no image is decoded). Transforms must draw from torch's RNG only (ours do).
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import Dataset

__all__ = ["EpochSampler", "SeededSamples"]


class EpochSampler:
    """The batches of one process in one epoch: ``(index, sample_seed)`` lists, shuffled per (seed, epoch).

    DDP: the permutation is cut to a multiple of ``world_size`` and dealt round-robin (DistributedSampler's
    ``drop_last`` split), each rank keeps only whole batches, so every rank takes the same number of steps.
    """

    def __init__(self, size: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.size, self.batch_size, self.seed = size, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Select the epoch and the first batch to yield (``start`` > 0 on a mid-epoch resume)."""
        self.epoch, self.start = epoch, start

    def __len__(self) -> int:
        return max(0, (self.size // self.world_size) // self.batch_size - self.start)

    def batches_per_epoch(self) -> int:
        return (self.size // self.world_size) // self.batch_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(self.size, generator=g)
        seeds = torch.randint(0, 2**62, (self.size,), generator=g)
        per_rank = self.size // self.world_size
        mine = order[: per_rank * self.world_size][self.rank:: self.world_size].tolist()
        b = self.batch_size
        for i in range(self.start, self.batches_per_epoch()):
            chunk = mine[i * b:(i + 1) * b]
            yield [(j, int(seeds[j])) for j in chunk]


class SeededSamples(Dataset):
    """``dataset[index]`` with torch's RNG seeded by the sample's own seed (the caller's RNG left untouched)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.dataset[index]
