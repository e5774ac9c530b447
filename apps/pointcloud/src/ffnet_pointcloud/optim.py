"""The official optimizer of FFNet 3D on the engine: two learning rates and the OneCycle schedule.

Why not the engine's defaults: the official (Pointcept) config trains parameters named ``*block*`` at a tenth
of the base rate and decays every parameter (no bias/norm exemption), and it anneals with torch's OneCycleLR.
The schedule is a pure function of the optimizer step (:func:`one_cycle`), so a resumed run needs no scheduler
state; the engine scales every parameter group by ``lr(step) / optim.lr``, which keeps the block group at
``block_lr_scale`` of the base group throughout, exactly as OneCycleLR with ``max_lr=[lr, lr * scale]`` does.
OneCycleLR also cycles Adam's beta1 between 0.95 and 0.85 (its ``cycle_momentum`` default, which the official
recipe keeps); ``optim.cycle_momentum`` does the same (measured: without it the quick start loses ~4 mIoU).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from metamixer.train import loop
from metamixer.train.distributed import unwrap_model
from metamixer.train.errors import FFNetError
from metamixer.train.schedules import Schedule

from .config import PointcloudOptimConfig

__all__ = ["param_groups", "build_optimizer", "one_cycle", "one_cycle_momentum", "one_cycle_schedule", "set_momentum"]


def param_groups(model: nn.Module, lr: float, block_lr_scale: float, weight_decay: float) -> list[dict]:
    """Two groups as the official config: names containing "block" at ``lr * block_lr_scale``, the rest at lr."""
    block, other = [], []
    for name, p in unwrap_model(model).named_parameters():
        if p.requires_grad:
            (block if "block" in name else other).append(p)
    groups = [{"params": other, "lr": lr, "weight_decay": weight_decay, "name": "default"}]
    if block:
        groups.append({"params": block, "lr": lr * block_lr_scale, "weight_decay": weight_decay, "name": "block"})
    return groups


def build_optimizer(model: nn.Module, cfg: PointcloudOptimConfig) -> torch.optim.Optimizer:
    """``optim.name`` (official: AdamW) over the two official parameter groups."""
    groups = param_groups(model, cfg.lr, cfg.block_lr_scale, cfg.weight_decay)
    return loop.build_optimizer(model, cfg, params=groups)


def _cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1.0)


def _one_cycle(step: int, total: int, pct_start: float, start: float, peak: float, end: float) -> float:
    """OneCycleLR's two cosine phases: ``start`` -> ``peak`` until step ``pct_start * total - 1``, then -> ``end``
    at step ``total - 1`` (held there after)."""
    top = float(pct_start * total) - 1.0  # OneCycleLR's end of the first phase
    last = float(total - 1)
    step = min(step, max(total - 1, 0))
    if step <= top:
        return _cos(start, peak, step / top if top > 0 else 1.0)
    span = last - top
    return _cos(peak, end, (step - top) / span if span > 0 else 1.0)


def one_cycle(step: int, total: int, lr: float, pct_start: float, div_factor: float, final_div_factor: float) -> float:
    """torch's ``OneCycleLR(anneal_strategy="cos", three_phase=False)`` learning rate after ``step`` scheduler
    steps, i.e. the rate of the 0-based optimizer step ``step``."""
    initial = lr / div_factor
    return _one_cycle(step, total, pct_start, initial, lr, initial / final_div_factor)


def one_cycle_momentum(step: int, total: int, pct_start: float, base: float, top: float) -> float:
    """OneCycleLR's ``cycle_momentum``: Adam's beta1 (SGD's momentum) runs opposite to the rate, ``top`` ->
    ``base`` at the peak -> ``top``."""
    return _one_cycle(step, total, pct_start, top, base, top)


def set_momentum(optimizer: torch.optim.Optimizer, momentum: float) -> None:
    for group in optimizer.param_groups:
        if "betas" in group:
            group["betas"] = (momentum, *tuple(group["betas"])[1:])
        elif "momentum" in group:
            group["momentum"] = momentum


def one_cycle_schedule(cfg: PointcloudOptimConfig, total_steps: int) -> Schedule:
    """``lr(step)`` of ``optim.schedule=onecycle`` over ``total_steps`` optimizer steps (the momentum half of
    OneCycleLR is :func:`one_cycle_momentum`, set by the task's ``before_step``)."""
    if cfg.warmup_steps or cfg.warmup_epochs:
        raise FFNetError("optim.warmup_steps / optim.warmup_epochs do not apply to optim.schedule=onecycle "
                         "(its rise is optim.pct_start); set them to 0 or use optim.schedule=cosine")
    total = max(1, total_steps)
    return lambda step: one_cycle(step, total, cfg.lr, cfg.pct_start, cfg.div_factor, cfg.final_div_factor)
