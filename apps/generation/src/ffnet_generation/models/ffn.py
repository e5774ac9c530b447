"""U-DiT's channel mixer: a re-parameterizable conv-FFN (1x1 expand -> GELU -> depthwise 5x5 -> 1x1 project).

In training each 1x1 projection is a product of two 1x1 convs (through a C-wide bottleneck) and the depthwise
conv is a sum of 5x5, 3x3, 1x1 branches plus identity; all of it is linear, so :meth:`RepConvFFN.fuse` folds it
into the plain three-conv FFN (exactly, in float64 algebra) for sampling. The fused module is new: it shares
no storage with the training weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RepConvFFN", "plain_conv_ffn"]


def plain_conv_ffn(dim: int, hidden: int, kernel_size: int = 5) -> nn.Sequential:
    """fc1 (1x1) -> GELU -> dw (kxk depthwise) -> fc2 (1x1), all biased: the deploy form."""
    return nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.GELU(),
                         nn.Conv2d(hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden),
                         nn.Conv2d(hidden, dim, 1))


class RepConvFFN(nn.Module):
    """Training form of U-DiT's FFN (``rep=True``); ``fuse()`` returns :func:`plain_conv_ffn` with merged weights."""

    def __init__(self, dim: int, expansion: float = 2.0, kernel_size: int = 5, small_kernels=(3, 1)) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        mid = hidden // 2
        self.dim, self.hidden, self.kernel_size = dim, hidden, kernel_size
        self.fc1_a, self.fc1_b = nn.Conv2d(dim, mid, 1), nn.Conv2d(mid, hidden, 1)
        self.act = nn.GELU()
        self.dw = nn.ModuleList(
            nn.Conv2d(hidden, hidden, k, padding=k // 2, groups=hidden) for k in (kernel_size, *small_kernels))
        self.fc2_a, self.fc2_b = nn.Conv2d(hidden, mid, 1), nn.Conv2d(mid, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.fc1_b(self.fc1_a(x)))
        y = x
        for conv in self.dw:
            y = y + conv(x)
        return self.fc2_b(self.fc2_a(y))

    @staticmethod
    def _compose(first: nn.Conv2d, second: nn.Conv2d) -> tuple[torch.Tensor, torch.Tensor]:
        w1, w2 = first.weight.double().flatten(1), second.weight.double().flatten(1)
        return (w2 @ w1)[:, :, None, None], w2 @ first.bias.double() + second.bias.double()

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        ref = self.fc1_a.weight
        fused = plain_conv_ffn(self.dim, self.hidden, self.kernel_size).to(device=ref.device)
        w1, b1 = self._compose(self.fc1_a, self.fc1_b)
        w2, b2 = self._compose(self.fc2_a, self.fc2_b)
        k = self.kernel_size
        dw_w = torch.zeros(self.hidden, 1, k, k, dtype=torch.float64, device=ref.device)
        dw_w[:, :, k // 2, k // 2] = 1.0  # the identity branch
        dw_b = torch.zeros(self.hidden, dtype=torch.float64, device=ref.device)
        for conv in self.dw:
            pad = (k - conv.kernel_size[0]) // 2
            dw_w += F.pad(conv.weight.double(), (pad, pad, pad, pad))
            dw_b += conv.bias.double()
        for conv, (w, b) in zip((fused[0], fused[2], fused[3]), ((w1, b1), (dw_w, dw_b), (w2, b2))):
            conv.weight.copy_(w.to(ref.dtype))
            conv.bias.copy_(b.to(ref.dtype))
        return fused
