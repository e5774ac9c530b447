"""A batch iterator over :class:`WindowDataset` that is fast, deterministic, resumable and DDP-aware.

Why not ``torch.utils.data.DataLoader``: an ETTh1 epoch is ~8.5k tiny windows; gathering them by index in one op
is ~100x cheaper than per-item collation, and an explicit epoch-seeded permutation makes "resume from epoch e"
replay exactly the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from ffnet_timeseries.data.dataset import WindowDataset

__all__ = ["WindowLoader", "few_steps_advice"]

#: fewer optimizer steps per epoch than this and the per-epoch machinery (lr rules, validation, patience) is coarse
MIN_STEPS_PER_EPOCH = 10


def few_steps_advice(windows: int, batch_size: int, accum_steps: int = 1, world_size: int = 1,
                     minimum: int = MIN_STEPS_PER_EPOCH) -> str | None:
    """A warning when an epoch of ``windows`` training windows has fewer than ``minimum`` optimizer steps, with the
    largest ``train.batch_size`` that gives ``minimum`` (and a power of two at most that); None when it is enough.

    Why: the authors' recipes set the lr per epoch and stop after ``patience`` epochs without improvement, tuned
    for thousands of windows; on a small CSV (e.g. the 966-row illness file: 617 windows, 2 steps at batch 512)
    that is a few dozen updates in all, and the model barely leaves its initialization.
    """
    per_rank = -(-windows // world_size)
    batches = -(-per_rank // batch_size)
    steps = -(-batches // accum_steps)  # what the trainer counts: ceil(batches / accum_steps)
    if steps >= minimum:
        return None
    head = (f"train.batch_size={batch_size} gives only {steps} optimizer step{'s' if steps != 1 else ''} per epoch "
            f"({windows} training windows"
            + (f", {world_size} processes" if world_size > 1 else "") + (f", accum_steps {accum_steps}" if accum_steps > 1 else "")
            + "): the per-epoch lr schedule, validation and early stopping act only every few updates")
    # ceil(ceil(n / b) / a) >= m  <=>  ceil(n / b) > (m - 1) a  <=>  b < n / ((m - 1) a)
    largest = -(-per_rank // ((minimum - 1) * accum_steps)) - 1
    if largest < 1:
        return f"{head}; there are too few windows for {minimum} steps even at train.batch_size=1"
    power = 1 << (largest.bit_length() - 1)
    choice = f"train.batch_size={power}" + (f" (or any value up to {largest})" if power != largest else "")
    return f"{head}; use {choice} for at least {minimum} steps per epoch"


class WindowLoader:
    """Iterate ``(x, y)`` batches. ``shuffle`` uses ``torch.randperm`` seeded by ``seed + epoch`` (call
    :meth:`set_epoch`). With ``world_size > 1`` each rank takes a strided shard of the (shuffled) order, padded
    by wrap-around so all ranks run the same number of steps (as ``DistributedSampler``); evaluation loaders
    (``shuffle=False, drop_last=False``) keep every sample exactly once on a single process.
    """

    def __init__(
        self,
        dataset: WindowDataset,
        batch_size: int,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.dataset, self.batch_size = dataset, batch_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        n = len(self.dataset)
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(n, generator=generator)
        else:
            order = torch.arange(n)
        if self.world_size > 1:
            per_rank = -(-n // self.world_size)
            order = torch.cat([order, order[: per_rank * self.world_size - n]])
            order = order[self.rank :: self.world_size]
        return order

    def __len__(self) -> int:
        n = len(self._indices()) if self.world_size > 1 else len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self.batches()

    def batches(self, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's batches from batch index ``start`` on: a resumed run skips the done ones without
        gathering them (the order itself is one ``randperm``)."""
        order = self._indices()
        for first in range(start * self.batch_size, len(order), self.batch_size):
            batch = order[first : first + self.batch_size]
            if self.drop_last and len(batch) < self.batch_size:
                break
            yield self.dataset.get_batch(batch)
