"""U-DiT's downsampled-token self-attention, built on the core multi-head self-attention.

U-DiT (Tian et al., NeurIPS 2024) makes attention cheap in a U-Net by (1) a depthwise 5x5 conv with a
shortcut as a low-pass "downsampler", (2) splitting the map into ``f*f`` interleaved sub-grids (pixel-unshuffle)
and running attention inside each sub-grid (1/f^2 of the tokens, so ~1/f^2 of the quadratic cost), then
(3) interleaving the results back. Its released models use cosine-similarity attention with a learned per-head
temperature and 2D rotary position embeddings; both are options of :class:`TokenAttention` (on by default).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from metamixer.nn.blocks import MultiHeadSelfAttention

__all__ = ["TokenAttention", "DownsampledTokenAttention", "rope_2d_tables", "apply_rope"]


def rope_2d_tables(height: int, width: int, head_dim: int, *, theta: float = 10000.0,
                   device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables [N, head_dim/2] of axial 2D RoPE: the first half of the pairs rotate with the column
    index, the second half with the row index (tokens in row-major order)."""
    if head_dim % 4:
        raise ValueError(f"2D RoPE needs head_dim divisible by 4, got {head_dim}")
    quarter = head_dim // 4
    freqs = theta ** (-torch.arange(quarter, dtype=torch.float64, device=device) / quarter)
    rows = torch.arange(height, dtype=torch.float64, device=device).repeat_interleave(width)
    cols = torch.arange(width, dtype=torch.float64, device=device).repeat(height)
    angles = torch.cat([cols[:, None] * freqs[None], rows[:, None] * freqs[None]], dim=1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of x [..., N, D] by the angles of the tables [N, D/2]."""
    pairs = x.unflatten(-1, (-1, 2))
    real, imag = pairs[..., 0], pairs[..., 1]
    return torch.stack([real * cos - imag * sin, real * sin + imag * cos], dim=-1).flatten(-2)


class TokenAttention(MultiHeadSelfAttention):
    """Core multi-head self-attention on tokens [B, N, C] plus U-DiT's options.

    ``cosine``: q and k are L2-normalised and scaled by a learned per-head temperature (clamped at 100), which
    keeps logits bounded in long diffusion training. ``rope``: 2D rotary embeddings, so the grid shape must be
    passed to :meth:`forward`. With both off this is exactly the core module.
    """

    def __init__(self, dim: int, num_heads: int, *, cosine: bool = True, rope: bool = True) -> None:
        super().__init__(dim, num_heads, qkv_bias=True, channels_first=False)
        self.cosine = cosine
        self.rope = rope
        if cosine:
            self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))

    def forward(self, x: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:  # type: ignore[override]
        if not (self.cosine or self.rope):
            return super().forward(x)
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.rope:
            if grid is None or grid[0] * grid[1] != n:
                raise ValueError(f"RoPE needs the token grid (h, w) with h*w = {n}, got {grid}")
            cos, sin = rope_2d_tables(grid[0], grid[1], self.head_dim, device=x.device, dtype=q.dtype)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        scale = None
        if self.cosine:
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
            q = q * self.logit_scale.clamp(max=math.log(100.0)).exp().to(q.dtype)
            scale = 1.0
        y = F.scaled_dot_product_attention(q, k, v, scale=scale)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(b, n, c)))


class DownsampledTokenAttention(nn.Module):
    """x [B, C, H, W] -> depthwise-conv low-pass (+ shortcut) -> attention inside each of the f*f interleaved
    sub-grids -> interleave back. ``down_factor=1`` is plain global attention over all H*W tokens."""

    def __init__(self, dim: int, num_heads: int, *, down_factor: int = 2, downsampler_kernel: int = 5,
                 cosine: bool = True, rope: bool = True) -> None:
        super().__init__()
        self.down_factor = down_factor
        self.downsampler = nn.Conv2d(dim, dim, downsampler_kernel, padding=downsampler_kernel // 2, groups=dim)
        self.attn = TokenAttention(dim, num_heads, cosine=cosine, rope=rope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        f = self.down_factor
        if h % f or w % f:
            raise ValueError(f"feature map {h}x{w} is not divisible by the token down-sampling factor {f}")
        x = x + self.downsampler(x)
        hs, ws = h // f, w // f
        # [B, C, hs, f, ws, f] -> [B, f, f, hs, ws, C] -> one token sequence per sub-grid
        tokens = x.reshape(b, c, hs, f, ws, f).permute(0, 3, 5, 2, 4, 1).reshape(b * f * f, hs * ws, c)
        y = self.attn(tokens, (hs, ws))
        return y.reshape(b, f, f, hs, ws, c).permute(0, 5, 3, 1, 4, 2).reshape(b, c, h, w)
