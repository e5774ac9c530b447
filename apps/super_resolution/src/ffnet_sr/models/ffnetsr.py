"""FFNetSR: an FFNet body for efficient single-image super-resolution (paper §4.2, App. F.2).

Layout (matches the authors' BasicSR checkpoints key for key, see ``official_architecture.md`` §2):

- ``proj``: 3x3 conv, 3 -> dim (the whole shallow feature extractor);
- ``body``: ``depth`` FFNet blocks without any normalisation, each ``x + TokenMixer(x)`` then ``x + ConvFFN(x)``;
  token mixer = 1x1 -> DW3x3 -> GELU -> DW3x3 (FFNified attention), channel mixer = DW3x3 -> 1x1 (x2) -> GELU
  -> 1x1. They are the core :class:`metamixer.nn.blocks.FFNifiedAttention` / :class:`~metamixer.nn.blocks.ConvFFN`
  with index child names, so the keys read ``body.<i>.token_mixer.<0|1|3>`` / ``body.<i>.channel_mixer.<0|1|3>``;
- ``conv_bef_up``: 3x3 conv, dim -> 3·s², added to the "anchor" (the LR input with each channel repeated s²
  times, which after PixelShuffle is nearest-neighbour upsampling), then ``PixelShuffle(s)``.

There is no long feature skip around the body, no mean shift and no clamp; inputs/outputs are RGB in [0, 1].
SR FFNet has no BatchNorm and no re-parameterization branches (BN hurts SR, as in EDSR), so ``fuse()`` has
nothing to merge: it returns an eval-mode copy with the same weights and the same state_dict keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from metamixer.nn.blocks import ConvFFN, FFNetBlock, FFNifiedAttention
from metamixer.nn.reparam import reparameterize

__all__ = ["FFNetSR", "ffnetsr_block"]

_INDEX_NAMES = ("0", "1", "2", "3")


def ffnetsr_block(dim: int, expansion: float = 2.0, kernel_size: int = 3) -> FFNetBlock:
    """One norm-free FFNet block with the block-level skips FFNetSR uses (``FFNetBlock(residual=True)``)."""
    token_mixer = FFNifiedAttention(dim, kernel_size, ndim=2, rep_kernels=None, fc_norm=False, names=_INDEX_NAMES)
    channel_mixer = ConvFFN(dim, kernel_size, expansion, ndim=2, rep_kernels=None, dw_norm=False, names=_INDEX_NAMES)
    return FFNetBlock(token_mixer, channel_mixer, residual=True)


class FFNetSR(nn.Module):
    """Single-image SR network: ``PixelShuffle(conv_bef_up(body(proj(x))) + repeat(x, s²))``.

    Args:
        scale: upscaling factor (2, 3, 4; any integer >= 1 works).
        dim: feature channels (96 in both published variants).
        depth: number of FFNet blocks (36 light, 48 full).
        expansion: ConvFFN hidden ratio (2).
        kernel_size: depthwise kernel (3 everywhere in SR).
        in_chans: image channels (3; the anchor requires output channels == input channels).
    """

    def __init__(
        self,
        scale: int = 2,
        dim: int = 96,
        depth: int = 36,
        expansion: float = 2.0,
        kernel_size: int = 3,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        if int(scale) != scale or scale < 1:
            raise ValueError(f"scale must be a positive integer, got {scale}")
        self.scale = int(scale)
        self.in_chans = in_chans
        self.dim = dim
        self.depth = depth
        self.proj = nn.Conv2d(in_chans, dim, 3, 1, 1)
        self.body = nn.Sequential(*[ffnetsr_block(dim, expansion, kernel_size) for _ in range(depth)])
        self.conv_bef_up = nn.Conv2d(dim, in_chans * self.scale**2, 3, 1, 1)
        self.upsample = nn.PixelShuffle(self.scale)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Deep features after the body and the tail conv (``[B, 3·s², h, w]``), before the anchor is added."""
        return self.conv_bef_up(self.body(self.proj(x)))

    def anchor(self, x: torch.Tensor) -> torch.Tensor:
        """LR input with every channel repeated s² times consecutively (nearest upsampling after PixelShuffle)."""
        return torch.repeat_interleave(x, self.scale**2, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.forward_features(x) + self.anchor(x))

    def fuse(self) -> FFNetSR:
        """Eval-mode copy (nothing to fuse in SR: no BN, no branches); kept for the timm-style model contract."""
        return reparameterize(self, inplace=False)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, dim={self.dim}, depth={self.depth}"


def nearest_upsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Reference for the anchor: plain nearest-neighbour interpolation (used in tests)."""
    return F.interpolate(x, scale_factor=scale, mode="nearest")
