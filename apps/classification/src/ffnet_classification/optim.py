"""Weight-decay groups of the official recipe (the optimizer and its schedule are the engine's)."""
from __future__ import annotations

import torch
from torch import nn

from metamixer.train.loop import build_optimizer as engine_optimizer

from .config import ClsOptimConfig, resolve_lr

__all__ = ["param_groups", "build_optimizer", "resolve_lr"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: decayed conv/linear weights; no decay for norms, biases and LayerScale (any 1-D tensor).

    The official trainer (timm ``param_groups_weight_decay``) exempts every parameter with ndim <= 1 plus the
    model's ``no_weight_decay()`` names; LayerScale here is ``[C,1,1]`` (ndim 3), so it needs the name rule,
    which the engine's plain ndim rule would miss.
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


def build_optimizer(model: nn.Module, cfg: ClsOptimConfig) -> torch.optim.Optimizer:
    """``optim.name`` over :func:`param_groups`; ``cfg.lr`` must already be resolved (:func:`resolve_lr`)."""
    return engine_optimizer(model, cfg, params=param_groups(model, cfg.weight_decay))
