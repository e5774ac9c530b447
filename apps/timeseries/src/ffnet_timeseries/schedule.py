"""The authors' learning-rate rules, per epoch (1-based), as pure functions of the optimizer step for the engine.

``official_type3`` reproduces what the authors' forecasting runs actually did: epoch 1 at ``lr / 25`` (a side
effect of constructing an unused OneCycleLR, which sets the initial lr to max_lr/25), epochs 2-4 at ``lr``, then
``lr * 0.9 ** (epoch - 4)``. ``type3`` is the same without the epoch-1 quirk (what TSLib's type3 intends);
``type1`` halves every epoch. ``constant`` and ``cosine`` are core's per-step schedules (with ``optim.warmup_*``).
"""

from __future__ import annotations

from metamixer.train.errors import FFNetError
from metamixer.train.schedules import Schedule

__all__ = ["EPOCH_SCHEDULES", "lr_at_epoch", "epoch_schedule"]

EPOCH_SCHEDULES = ("official_type3", "type3", "type1")


def lr_at_epoch(schedule: str, base_lr: float, epoch: int, first_epoch_div: float = 25.0) -> float:
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
    raise FFNetError(f"optim.schedule: unknown per-epoch schedule {schedule!r}; expected one of "
                     f"{', '.join(EPOCH_SCHEDULES)} (or core's constant, cosine)")


def epoch_schedule(schedule: str, base_lr: float, steps_per_epoch: int, first_epoch_div: float = 25.0) -> Schedule:
    """``lr(step)`` for a per-epoch rule: step ``s`` (0-based) belongs to epoch ``s // steps_per_epoch + 1``."""
    lr_at_epoch(schedule, base_lr, 1, first_epoch_div)  # an unknown name fails now, not at the first step
    return lambda step: lr_at_epoch(schedule, base_lr, step // steps_per_epoch + 1, first_epoch_div)
