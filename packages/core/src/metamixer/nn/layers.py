"""Small layers every FFNet variant shares: channels-first LayerNorm, LayerScale, DropPath, factories.

Everything here works for any number of spatial dims because the same blocks are used on sequences (NCL),
images (NCHW) and, through dense fallbacks, volumes (NCDHW).
"""
from __future__ import annotations

import torch
from torch import nn

_CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BNS = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}


def conv_nd(ndim: int) -> type[nn.Module]:
    """The ``nn.ConvNd`` class for ``ndim`` spatial dims."""
    try:
        return _CONVS[ndim]
    except KeyError:
        raise ValueError(f"ndim must be 1, 2 or 3, got {ndim}") from None


def bn_nd(ndim: int) -> type[nn.Module]:
    """The ``nn.BatchNormNd`` class for ``ndim`` spatial dims."""
    try:
        return _BNS[ndim]
    except KeyError:
        raise ValueError(f"ndim must be 1, 2 or 3, got {ndim}") from None


def get_act(name: str | None) -> nn.Module:
    """Activation by name; GELU is the paper's choice (it replaces attention's softmax)."""
    table = {
        "gelu": nn.GELU,
        "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
        "relu": nn.ReLU,
        "silu": nn.SiLU,
        "hardswish": nn.Hardswish,
        "identity": nn.Identity,
        None: nn.Identity,
    }
    key = name.lower() if isinstance(name, str) else name
    if key not in table:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(k for k in table if k)}")
    return table[key]()


class LayerNormChannelsFirst(nn.Module):
    """LayerNorm over the channel dim of ``[B, C, *spatial]`` tensors.

    Conv nets keep channels first; permuting to channels-last for ``nn.LayerNorm`` and back costs two copies,
    so we normalise over dim 1 directly. Parameter names (``weight``, ``bias``) match ``nn.LayerNorm``.
    """

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) * torch.rsqrt(var + self.eps)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return x * self.weight.view(shape) + self.bias.view(shape)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps}"


LayerNorm2d = LayerNormChannelsFirst


class LayerScale(nn.Module):
    """Per-channel learnable scale of a residual branch (CaiT); keeps deep FFNets stable early in training."""

    def __init__(self, dim: int, init_value: float = 1e-6, ndim: int = 2) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_value * torch.ones((dim,) + (1,) * ndim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def drop_path(x: torch.Tensor, p: float = 0.0, training: bool = False) -> torch.Tensor:
    """Stochastic depth: drop whole residual branches per sample, rescaling the kept ones by 1/(1-p)."""
    if p == 0.0 or not training:
        return x
    keep = 1.0 - p
    shape = [x.shape[0]] + [1] * (x.dim() - 1)  # a list, not tuple arithmetic: scriptable
    mask = x.new_empty(shape).bernoulli_(keep)
    return x * mask.div_(keep)


class DropPath(nn.Module):
    """Module form of :func:`drop_path`; an exact identity in eval mode (so exports contain no ``bernoulli``)."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        return drop_path(x, self.p, True)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def layer_norm_last(x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
    """Apply a channels-last ``nn.LayerNorm`` to a channels-first tensor."""
    return norm(x.movedim(1, -1)).movedim(-1, 1)


def linear_ramp(total: int, max_value: float) -> list[float]:
    """Linearly increasing per-block rates 0..max_value (DropPath schedule used by every FFNet)."""
    if total <= 1:
        return [0.0] * total
    return [max_value * i / (total - 1) for i in range(total)]


__all__ = [
    "conv_nd",
    "bn_nd",
    "get_act",
    "LayerNormChannelsFirst",
    "LayerNorm2d",
    "LayerScale",
    "drop_path",
    "DropPath",
    "layer_norm_last",
    "linear_ramp",
]
