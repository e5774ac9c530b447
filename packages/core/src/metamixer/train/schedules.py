"""Learning-rate schedules as pure functions of the optimizer step, so a resumed run needs no scheduler state.

Every app's schedule is one of these, chosen by ``optim.schedule``; an app with a schedule of its own (FFNet-TS's
per-epoch rules from the authors' scripts) passes a callable of the same shape to the trainer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

__all__ = ["Schedule", "SCHEDULES", "warmup_cosine", "build_schedule"]

#: ``lr(step)`` for the 0-based optimizer step about to be taken
Schedule = Callable[[int], float]
SCHEDULES = ("constant", "cosine")


def warmup_cosine(step: int, total: int, lr: float, min_lr: float = 0.0, warmup: int = 0,
                  warmup_lr: float = 0.0) -> float:
    """Linear warmup from ``warmup_lr`` to ``lr`` over ``warmup`` steps, then half a cosine from ``lr`` to
    ``min_lr`` at step ``total`` (held there after)."""
    if warmup > 0 and step < warmup:
        return warmup_lr + (lr - warmup_lr) * step / warmup
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def build_schedule(name: Literal["constant", "cosine"], lr: float, total_steps: int, *, min_lr: float = 0.0,
                   warmup_steps: int = 0, warmup_lr: float = 0.0) -> Schedule:
    """The named schedule over ``total_steps`` optimizer steps (warmup applies to both)."""
    if name == "cosine":
        return lambda step: warmup_cosine(step, total_steps, lr, min_lr, warmup_steps, warmup_lr)
    if name == "constant":
        return lambda step: (warmup_lr + (lr - warmup_lr) * step / warmup_steps) if step < warmup_steps else lr
    raise ValueError(f"unknown schedule {name!r} (expected one of {', '.join(SCHEDULES)})")
