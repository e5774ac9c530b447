"""Reversible instance normalization (RevIN, Kim et al. 2022) as used by FFNet-TS.

Each input window is normalized per sample and per variable by its own time-mean and (biased) std, the network
forecasts in that normalized space, and the forecast is mapped back with the same statistics. This is what makes
one model robust to the level shifts between the train and test periods of ETT/Weather.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RevIN"]


class RevIN(nn.Module):
    """``normalize(x)`` stores detached stats of ``x [B, L, M]``; ``denormalize(y)`` undoes them on ``y [B, H, M]``.

    ``affine=True`` adds a learnable per-variable scale/shift (``affine_weight``/``affine_bias``, the names used by
    the reference RevIN); the official FFNet scripts use ``affine=False`` (no parameters).
    ``subtract_last=True`` subtracts the last observed value instead of the mean.
    """

    def __init__(self, n_vars: int, eps: float = 1e-5, affine: bool = False, subtract_last: bool = False) -> None:
        super().__init__()
        self.n_vars = n_vars
        self.eps = eps
        self.affine = affine
        self.subtract_last = subtract_last
        if affine:
            self.affine_weight = nn.Parameter(torch.ones(n_vars))
            self.affine_bias = nn.Parameter(torch.zeros(n_vars))

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Return the normalized input and the (center, scale) stats, both ``[B, 1, M]`` and detached."""
        if self.subtract_last:
            center = x[:, -1:, :].detach()
        else:
            center = x.mean(dim=1, keepdim=True).detach()
        scale = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps).detach()
        x = (x - center) / scale
        if self.affine:
            x = x * self.affine_weight + self.affine_bias
        return x, (center, scale)

    def denormalize(self, y: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        center, scale = stats
        if self.affine:
            y = (y - self.affine_bias) / (self.affine_weight + self.eps * self.eps)
        return y * scale + center

    def extra_repr(self) -> str:
        return f"n_vars={self.n_vars}, eps={self.eps}, affine={self.affine}, subtract_last={self.subtract_last}"
