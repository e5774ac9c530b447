"""Learning-rate schedules, per epoch (1-based), as pure functions so resuming needs no scheduler state.

``official_type3`` reproduces what the authors' forecasting runs actually did: epoch 1 at ``lr / 25`` (a side
effect of constructing an unused OneCycleLR, which sets the initial lr to max_lr/25), epochs 2-4 at ``lr``, then
``lr * 0.9 ** (epoch - 4)``. ``type3`` is the same without the epoch-1 quirk (what TSLib's type3 intends).
"""

from __future__ import annotations

import math

from metamixer.train.errors import FFNetError

__all__ = ["SCHEDULES", "lr_at_epoch"]

SCHEDULES = ("official_type3", "type3", "type1", "constant", "cosine")


def lr_at_epoch(schedule: str, base_lr: float, epoch: int, total_epochs: int = 100, first_epoch_div: float = 25.0) -> float:
    """Learning rate to use during ``epoch`` (1-based)."""
    if epoch < 1:
        raise ValueError(f"epoch is 1-based, got {epoch}")
    if schedule == "official_type3":
        if epoch == 1:
            return base_lr / first_epoch_div
        return lr_at_epoch("type3", base_lr, epoch)
    if schedule == "type3":  # TSLib: after epoch e set lr if e < 3 else lr * 0.9 ** (e - 3)
        previous = epoch - 1
        return base_lr if previous < 3 else base_lr * 0.9 ** (previous - 3)
    if schedule == "type1":  # TSLib: halve every epoch
        return base_lr * 0.5 ** (epoch - 1)
    if schedule == "constant":
        return base_lr
    if schedule == "cosine":
        return 0.5 * base_lr * (1 + math.cos(math.pi * (epoch - 1) / max(1, total_epochs)))
    raise FFNetError(f"train.lr_schedule: unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")
