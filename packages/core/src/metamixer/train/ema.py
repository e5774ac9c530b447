"""Exponential moving average of model weights (the "EMA model" used for evaluation and checkpoints).

Keeps a frozen deep copy of the model. Parameters are averaged (``ema = decay * ema + (1 - decay) * live``).
Floating-point buffers (BN running statistics) are averaged too by default, as timm's ModelEmaV2/V3 do — the
official FFNet ImageNet recipe trains with timm's EMA, so this reproduces it; ``average_buffers=False`` copies
them from the live model instead. Integer buffers (``num_batches_tracked``) are always copied.
The EMA copy's ``state_dict`` has the same keys as the model, so it loads into a plain model for evaluation.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from metamixer.train.distributed import unwrap_model

__all__ = ["ModelEMA"]


class ModelEMA:
    """EMA of a model's weights.

    Args:
        model: the live model (DDP/compile wrappers are stripped).
        decay: target decay per update (0.9999 for ImageNet-scale runs, ~0.999 for short runs).
        warmup: if True use ``min(decay, (1 + n) / (10 + n))`` where ``n`` is the number of previous updates,
            so early updates track the fast-moving weights instead of being dominated by the random init.
            Off by default (paper recipes use a constant decay).
        device: keep the EMA copy on another device (e.g. ``"cpu"`` to save accelerator memory).
        average_buffers: EMA floating-point buffers (default, timm behaviour) instead of copying them.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = False,
                 device: str | torch.device | None = None, average_buffers: bool = True) -> None:
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.average_buffers = bool(average_buffers)
        self.device = torch.device(device) if device is not None else None
        self.updates = 0
        self.module = copy.deepcopy(unwrap_model(model)).eval()
        if self.device is not None:
            self.module.to(self.device)
        self.module.requires_grad_(False)
        self._param_names = {name for name, _ in self.module.named_parameters()}

    def current_decay(self) -> float:
        """The decay the next :meth:`update` will use."""
        if self.warmup:
            n = self.updates
            return min(self.decay, (1.0 + n) / (10.0 + n))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the live ``model``'s current weights into the EMA copy (call after each optimizer step)."""
        decay = self.current_decay()
        live = unwrap_model(model).state_dict()
        for name, ema_t in self.module.state_dict().items():
            src = live[name].detach()
            if src.device != ema_t.device:
                src = src.to(ema_t.device)
            if ema_t.is_floating_point() and (self.average_buffers or name in self._param_names):
                ema_t.lerp_(src.to(ema_t.dtype), 1.0 - decay)
            else:
                ema_t.copy_(src)
        self.updates += 1

    @torch.no_grad()
    def set(self, model: nn.Module) -> None:
        """Copy the live weights into the EMA (e.g. after loading pretrained weights)."""
        self.module.load_state_dict(unwrap_model(model).state_dict())

    def state_dict(self) -> dict[str, Any]:
        """The EMA model's state_dict (same keys as the model; loadable into a plain model)."""
        return self.module.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, Any], updates: int | None = None) -> None:
        """Load EMA weights (strict); ``updates`` restores the warmup counter when resuming."""
        self.module.load_state_dict(state_dict)
        if updates is not None:
            self.updates = int(updates)

    def __repr__(self) -> str:
        return f"ModelEMA(decay={self.decay}, warmup={self.warmup}, updates={self.updates})"
