"""Small layers every FFNet variant shares: channels-first LayerNorm, LayerScale, DropPath, factories.

Everything here works for any number of spatial dims because the same blocks are used on sequences (NCL),
images (NCHW) and, through dense fallbacks, volumes (NCDHW).
"""
from __future__ import annotations

import math

import numpy as np
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
    mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
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


_DROPOUT_LEVELS = 1 << 16  # FastDropout draws 16-bit uniforms: p is rounded to a multiple of 1/65536


def apply_keep_mask_(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``x *= keep`` in place for a bool ``keep`` of the same shape; returns ``x``.

    On CPU the multiply runs in NumPy over the shared memory: NumPy multiplies float by bool in its vector loop
    (0.37 ns per element on one Xeon core), while torch first casts the bool mask to float (1.3 ns per element)."""
    numpy_ok = x.dtype in (torch.float32, torch.float64, torch.float16)  # NumPy has no bfloat16
    if numpy_ok and x.device.type == "cpu" and not x.requires_grad and x.is_contiguous() and keep.is_contiguous():
        array = x.numpy()
        np.multiply(array, keep.numpy(), out=array)
        return x
    return x.mul_(keep)


class _KeepMaskScale(torch.autograd.Function):
    """``x * keep * scale`` saving only the bool mask (1 byte per element) for the backward pass."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:  # noqa: ANN001
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return apply_keep_mask_(x.mul(scale), keep)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # noqa: ANN001
        (keep,) = ctx.saved_tensors
        return apply_keep_mask_(grad.mul(ctx.scale), keep), None, None


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout whose CPU mask costs one 64-bit random number per four elements.

    Why: on CPU ``F.dropout`` draws one Mersenne-Twister sample per element (``bernoulli_``), which was a quarter
    of FFNet-TS's training step (4 masks of 22 M elements per step at ETTh1 scale). Here each 64-bit draw is split
    into four 16-bit uniforms, so the drop probability is ``round(p * 65536) / 65536`` (within 7.7e-6 of ``p``) and
    the kept values are scaled by exactly ``1 / (1 - that)``: an unbiased dropout, not bit-identical to
    ``F.dropout``'s random stream. On other devices ``F.dropout`` (a fused kernel there) is used as is.
    """
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or p >= 1.0:
        return torch.nn.functional.dropout(x, p, training)
    keep, scale = dropout_keep_mask(x.shape, p, x.device)
    return _KeepMaskScale.apply(x, keep, scale)


def dropout_keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu") -> tuple[torch.Tensor, float]:
    """:func:`fast_dropout`'s mask: a bool ``keep`` tensor of ``shape`` (kept with probability ``1 - p'``) and the
    inverted-dropout scale ``1 / (1 - p')``, where ``p' = round(p * 65536) / 65536`` (``0 <= p < 1``).

    Each element compares one 16-bit uniform with the threshold. On CPU the uniforms come from NumPy's SFC64
    (four per 64-bit output) seeded by one draw of torch's default generator, so ``torch.manual_seed`` still fixes
    the mask; SFC64 plus NumPy's vectorized compare cost ~0.9 ns per element against ~3 ns for torch's
    Mersenne-Twister ``random_`` and its scalar int16 compare (measured on one Xeon core)."""
    level = round(p * _DROPOUT_LEVELS) - _DROPOUT_LEVELS // 2
    numel = math.prod(shape)
    words = (numel + 3) // 4
    if torch.device(device).type == "cpu":
        seed = int(torch.randint(0, 2**62, (1,)).item())
        bits = np.random.SFC64(seed).random_raw(words).view(np.int16)[:numel]
        return torch.from_numpy(np.greater_equal(bits, level)).view(shape), dropout_scale(p)
    bits = torch.empty(words, dtype=torch.int64, device=device).random_(-(2**63), None)
    return (bits.view(torch.int16)[:numel] >= level).view(shape), dropout_scale(p)


def dropout_scale(p: float) -> float:
    """The scale :func:`dropout_keep_mask` uses for drop probability ``p`` (no random draw)."""
    return _DROPOUT_LEVELS / (_DROPOUT_LEVELS - round(p * _DROPOUT_LEVELS))


class FastDropout(nn.Dropout):
    """``nn.Dropout`` with :func:`fast_dropout`'s cheaper CPU mask (same ``p`` attribute, no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            raise ValueError("FastDropout has no in-place mode")
        return fast_dropout(x, self.p, self.training)


__all__ = [
    "conv_nd",
    "bn_nd",
    "get_act",
    "LayerNormChannelsFirst",
    "LayerNorm2d",
    "LayerScale",
    "drop_path",
    "DropPath",
    "fast_dropout",
    "dropout_keep_mask",
    "apply_keep_mask_",
    "dropout_scale",
    "FastDropout",
    "layer_norm_last",
    "linear_ramp",
]
