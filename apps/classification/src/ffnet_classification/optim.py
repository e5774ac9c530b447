"""Optimizer with weight-decay groups and the warmup + cosine schedule (stepped per iteration)."""
from __future__ import annotations

import math

import torch
from torch import nn

from metamixer.train.errors import FFNetError

from .config import OptimConfig


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed conv/linear weights; no decay for norms, biases and LayerScale (any 1-D tensor).

    The official trainer (timm ``param_groups_weight_decay``) exempts every parameter with ndim <= 1 plus the
    model's ``no_weight_decay()`` names; LayerScale here is ``[C,1,1]`` (ndim 3), so it needs the name rule.
    """
    skip = set(getattr(model, "no_weight_decay", lambda: set())())
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name in skip or name.endswith((".bias", "layer_scale", ".gamma")):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]


def resolve_lr(cfg: OptimConfig, global_batch: int) -> float:
    """``lr`` if given, else ``base_lr * global_batch / lr_base_batch`` (1e-3 at 1024 images)."""
    return cfg.lr if cfg.lr is not None else cfg.base_lr * global_batch / cfg.lr_base_batch


def build_optimizer(model: nn.Module, cfg: OptimConfig, lr: float) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if cfg.opt == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=cfg.betas, eps=cfg.eps)
    if cfg.opt == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=True)
    raise FFNetError(f"optim.opt must be adamw or sgd, got {cfg.opt!r}")


class WarmupCosine:
    """lr multiplier at iteration t: linear warmup from ``warmup_lr`` to ``lr``, then cosine to ``min_lr``.

    A plain callable object (not a lambda) so ``LambdaLR.state_dict()`` stays picklable with weights_only.
    """

    def __init__(self, lr: float, total_steps: int, warmup_steps: int, warmup_lr: float, min_lr: float,
                 sched: str = "cosine") -> None:
        self.lr = lr
        self.total = max(1, total_steps)
        self.warmup = max(0, warmup_steps)
        self.warmup_lr = warmup_lr
        self.min_lr = min_lr
        self.sched = sched

    def __call__(self, step: int) -> float:
        if self.sched == "none":
            return 1.0
        if step < self.warmup:
            return (self.warmup_lr + (self.lr - self.warmup_lr) * step / self.warmup) / self.lr
        t = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return (self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + math.cos(math.pi * t))) / self.lr


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: OptimConfig, lr: float, epochs: int, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    fn = WarmupCosine(lr, epochs * steps_per_epoch, int(round(cfg.warmup_epochs * steps_per_epoch)),
                      cfg.warmup_lr, cfg.min_lr, cfg.sched)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
