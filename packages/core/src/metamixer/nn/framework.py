"""MetaMixer (paper §3.1, Eq. 4, App. B): a mixer defined by five sub-operations, none of them fixed.

    q      = query_proj(x)                       # query projection
    K, V   = key_value(x)                        # key-value generation: computed from x, or static weights
    S      = compatibility(q, K)                 # query-key interaction: dot-product, linear, depthwise conv
    A      = activation(S)                       # coefficient generation: softmax, GELU, ...
    y      = aggregation(A, V)                   # coefficient-value interaction: weighted sum, depthwise conv
    out    = out_proj(y)

Choosing the sub-operations yields the well-known mixers (:func:`self_attention`, :func:`ffn`,
:func:`convnext_block`, :func:`spatial_mlp`, :func:`ffnified_attention`). The point of the abstraction is that
you can swap one sub-operation and keep the rest, which is how FFNified attention was derived from attention.

Conventions: token mixers over sequences take ``[B, N, C]``; convolutional sub-operations take channels-first
``[B, C, *spatial]`` (``ndim`` spatial dims).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .layers import LayerNormChannelsFirst, conv_nd, get_act

# --------------------------------------------------------------------------------------------------------
# Key-value generation


class ComputedKeyValue(nn.Module):
    """Instance-specific keys and values: linear projections of the input (self-attention)."""

    def __init__(self, dim: int, bias: bool = True) -> None:
        super().__init__()
        self.key = nn.Linear(dim, dim, bias=bias)
        self.value = nn.Linear(dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.key(x), self.value(x)


class StaticKeyValue(nn.Module):
    """Static memories learned on the training set (FFN): ``num_memories`` key and value vectors.

    ``key`` is ``[M, C_in]`` with an optional per-memory bias; ``value`` is ``[C_out, M]`` plus bias — the
    layout of ``nn.Linear`` weights, so an FFN's two Linear layers are exactly its keys and values.
    """

    def __init__(self, in_dim: int, num_memories: int, out_dim: int | None = None, bias: bool = True) -> None:
        super().__init__()
        out_dim = out_dim or in_dim
        self.key = nn.Parameter(torch.empty(num_memories, in_dim))
        self.key_bias = nn.Parameter(torch.zeros(num_memories)) if bias else None
        self.value = nn.Parameter(torch.empty(out_dim, num_memories))
        self.value_bias = nn.Parameter(torch.zeros(out_dim)) if bias else None
        nn.init.trunc_normal_(self.key, std=0.02)
        nn.init.trunc_normal_(self.value, std=0.02)

    def forward(self, x: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor | None], tuple[torch.Tensor, torch.Tensor | None]]:
        return (self.key, self.key_bias), (self.value, self.value_bias)


class StaticConvKeyValue(nn.Module):
    """Static depthwise kernels as keys and values (FFNified attention): each channel's kernel is a memory
    of a local spatial pattern (key) and of how to spread the resulting coefficient (value)."""

    def __init__(self, dim: int, kernel_size: int, ndim: int = 2, bias: bool = True) -> None:
        super().__init__()
        self.key = conv_nd(ndim)(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=bias)
        self.value = conv_nd(ndim)(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim, bias=bias)

    def forward(self, x: torch.Tensor) -> tuple[nn.Module, nn.Module]:
        return self.key, self.value


# --------------------------------------------------------------------------------------------------------
# Query-key compatibility and coefficient-value aggregation


class DotProductCompatibility(nn.Module):
    """Scaled dot products between every query token and every key token, per head: ``QK^T / sqrt(d)``."""

    def __init__(self, num_heads: int = 1) -> None:
        super().__init__()
        self.num_heads = num_heads

    def split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, c = t.shape
        return t.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        q, k = self.split(q), self.split(k)
        return q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])


class MatmulAggregation(nn.Module):
    """Coefficient-weighted sum of value tokens ``A V``, heads merged back to channels."""

    def __init__(self, num_heads: int = 1) -> None:
        super().__init__()
        self.num_heads = num_heads

    def forward(self, a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        b, n, c = v.shape
        v = v.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)
        return (a @ v).transpose(1, 2).reshape(b, a.shape[-2], c)


class LinearCompatibility(nn.Module):
    """Query against static key vectors along the channel axis: ``q K^T + b`` (an FFN's first layer)."""

    def forward(self, q: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor | None]) -> torch.Tensor:
        key, bias = kv
        return F.linear(q, key, bias)


class LinearAggregation(nn.Module):
    """Coefficients times static value vectors: ``A V^T + b`` (an FFN's second layer)."""

    def forward(self, a: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor | None]) -> torch.Tensor:
        value, bias = kv
        return F.linear(a, value, bias)


class ConvCompatibility(nn.Module):
    """Query against static depthwise kernels: each output is the match of a local window with a key."""

    def forward(self, q: torch.Tensor, key: nn.Module) -> torch.Tensor:
        return key(q)


class ConvAggregation(nn.Module):
    """Spread each coefficient over its neighbourhood with static depthwise value kernels."""

    def forward(self, a: torch.Tensor, value: nn.Module) -> torch.Tensor:
        return value(a)


class MoveDim(nn.Module):
    """Move one axis (e.g. channels-first <-> channels-last, or tokens <-> channels for a spatial MLP)."""

    def __init__(self, source: int, destination: int) -> None:
        super().__init__()
        self.source, self.destination = source, destination

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.movedim(self.source, self.destination)


# --------------------------------------------------------------------------------------------------------
# The framework


class MetaMixer(nn.Module):
    """A mixer assembled from the five MetaMixer sub-operations (plus an optional output projection).

    ``key_value`` receives the mixer input ``x`` (computed keys/values use it; static ones ignore it).
    """

    def __init__(
        self,
        query_proj: nn.Module,
        key_value: nn.Module,
        compatibility: nn.Module,
        activation: nn.Module,
        aggregation: nn.Module,
        out_proj: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.query_proj = query_proj
        self.key_value = key_value
        self.compatibility = compatibility
        self.activation = activation
        self.aggregation = aggregation
        self.out_proj = out_proj if out_proj is not None else nn.Identity()

    def coefficients(self, x: torch.Tensor) -> torch.Tensor:
        """The coefficient map A (e.g. attention probabilities, or FFN key activations, paper Fig. 2/4)."""
        q = self.query_proj(x)
        keys, _ = self.key_value(x)
        return self.activation(self.compatibility(q, keys))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.query_proj(x)
        keys, values = self.key_value(x)
        a = self.activation(self.compatibility(q, keys))
        return self.out_proj(self.aggregation(a, values))


def self_attention(dim: int, num_heads: int = 1, qkv_bias: bool = True, out_proj: bool = True) -> MetaMixer:
    """Self-attention: linear query, computed keys/values, dot-product, softmax, weighted sum. ``[B, N, C]``."""
    return MetaMixer(
        nn.Linear(dim, dim, bias=qkv_bias),
        ComputedKeyValue(dim, bias=qkv_bias),
        DotProductCompatibility(num_heads),
        nn.Softmax(dim=-1),
        MatmulAggregation(num_heads),
        nn.Linear(dim, dim) if out_proj else None,
    )


def ffn(dim: int, hidden: int, act: str = "gelu", out_dim: int | None = None) -> MetaMixer:
    """FFN as key-value memory (Geva et al.): identity query, static keys/values, linear interactions, GELU."""
    return MetaMixer(nn.Identity(), StaticKeyValue(dim, hidden, out_dim), LinearCompatibility(), get_act(act),
                     LinearAggregation())


def spatial_mlp(num_tokens: int, hidden: int, act: str = "gelu") -> MetaMixer:
    """MLP-Mixer's token-mixing MLP: the FFN mechanism applied along the token axis of ``[B, N, C]``."""
    return MetaMixer(
        MoveDim(1, 2),  # [B, C, N]: the query vectors are the per-channel token profiles
        StaticKeyValue(num_tokens, hidden),
        LinearCompatibility(),
        get_act(act),
        LinearAggregation(),
        MoveDim(1, 2),
    )


def convnext_block(dim: int, kernel_size: int = 7, expansion: float = 4.0, ndim: int = 2, act: str = "gelu") -> MetaMixer:
    """ConvNeXt block body: a depthwise conv (+LN) as the query projection of an FFN (channel mixing).
    Channels-first in, channels-first out; the residual is left to the caller."""
    query = nn.Sequential(
        conv_nd(ndim)(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim),
        LayerNormChannelsFirst(dim),
        MoveDim(1, -1),
    )
    return MetaMixer(query, StaticKeyValue(dim, int(dim * expansion)), LinearCompatibility(), get_act(act),
                     LinearAggregation(), MoveDim(-1, 1))


def ffnified_attention(dim: int, kernel_size: int = 7, ndim: int = 2, act: str = "gelu") -> MetaMixer:
    """FFNified attention: 1x1 query projection, static depthwise keys/values, conv interactions, GELU.
    Numerically the same function as :class:`metamixer.nn.blocks.FFNifiedAttention` without BN/re-param."""
    return MetaMixer(
        conv_nd(ndim)(dim, dim, 1),
        StaticConvKeyValue(dim, kernel_size, ndim),
        ConvCompatibility(),
        get_act(act),
        ConvAggregation(),
    )


__all__ = [
    "MetaMixer",
    "ComputedKeyValue",
    "StaticKeyValue",
    "StaticConvKeyValue",
    "DotProductCompatibility",
    "MatmulAggregation",
    "LinearCompatibility",
    "LinearAggregation",
    "ConvCompatibility",
    "ConvAggregation",
    "MoveDim",
    "self_attention",
    "ffn",
    "spatial_mlp",
    "convnext_block",
    "ffnified_attention",
]
