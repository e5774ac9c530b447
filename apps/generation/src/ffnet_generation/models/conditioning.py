"""Timestep / class-label embeddings and adaLN modulation (DiT's conditioning, channels-first form).

adaLN is specific to this app: every block regresses (shift, scale, gate) per channel from the condition vector
c = t_emb + y_emb and applies them around a parameter-free LayerNorm. The regressing Linear starts at zero, so
every block starts as the identity ("adaLN-Zero"), which is what makes deep diffusion transformers train
stably without warm-up tricks.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["timestep_embedding", "TimestepEmbedder", "LabelEmbedder", "AdaLNModulation", "modulate",
           "ParameterFreeLayerNorm2d"]


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features [cos, sin] of (possibly fractional) timesteps, shape [B, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedder(nn.Module):
    """Sinusoidal features -> Linear -> SiLU -> Linear."""

    def __init__(self, hidden: int, frequency_dim: int = 256) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(nn.Linear(frequency_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.frequency_dim).to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class embedding table with one extra "null" row (index ``num_classes``) for classifier-free guidance.

    In training, each label is replaced by the null label with probability ``dropout_prob`` so the same network
    also learns the unconditional model that guidance needs.
    """

    def __init__(self, num_classes: int, hidden: int, dropout_prob: float) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob
        self.embedding_table = nn.Embedding(num_classes + 1, hidden)

    def forward(self, labels: torch.Tensor, drop_mask: torch.Tensor | None = None) -> torch.Tensor:
        if drop_mask is not None:
            labels = torch.where(drop_mask, torch.full_like(labels, self.num_classes), labels)
        return self.embedding_table(labels)


class ParameterFreeLayerNorm2d(nn.Module):
    """LayerNorm over channels of [B, C, H, W] without affine parameters (adaLN supplies scale and shift)."""

    def __init__(self, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        return (x - mean) * torch.rsqrt(var + self.eps)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x * (1 + scale) + shift with per-sample, per-channel [B, C] parameters on a [B, C, H, W] map."""
    return x * (1.0 + scale[:, :, None, None]) + shift[:, :, None, None]


class AdaLNModulation(nn.Sequential):
    """SiLU -> Linear(cond_dim, chunks * dim), zero-initialised; ``forward`` returns the ``chunks`` tensors."""

    def __init__(self, cond_dim: int, dim: int, chunks: int) -> None:
        super().__init__(nn.SiLU(), nn.Linear(cond_dim, chunks * dim))
        self.chunks = chunks
        nn.init.zeros_(self[1].weight)
        nn.init.zeros_(self[1].bias)

    def forward(self, c: torch.Tensor) -> tuple[torch.Tensor, ...]:  # type: ignore[override]
        return super().forward(c).chunk(self.chunks, dim=1)
