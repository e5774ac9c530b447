"""Inverted dropout with a cheap CPU mask, and the in-place mask multiply the fused FFN kernels share.

Why here, among the kernels: on CPU ``F.dropout`` draws one Mersenne-Twister sample per element, which was a quarter
of FFNet-TS's training step; the mask below costs a quarter of a 64-bit draw per element, and the fused FFN
(:mod:`metamixer.kernels.fused_ffn`) builds its masks the same way so both paths share one random stream.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = ["apply_keep_mask_", "dropout_keep_mask", "dropout_scale", "fast_dropout", "FastDropout"]

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


@torch.library.custom_op("metamixer::masked_scale", mutates_args=())
def _masked_scale(x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    """``x * keep * scale`` as one operator (its backward is the same operator on the gradient), so autograd
    saves only the 1-byte mask and ``torch.compile`` sees one opaque node instead of a NumPy call."""
    if keep.dtype != torch.bool or keep.shape != x.shape or keep.device != x.device:
        raise ValueError(f"masked_scale: keep must be a bool tensor of shape {tuple(x.shape)} on {x.device}, "
                         f"got {keep.dtype} {tuple(keep.shape)} on {keep.device}")
    return apply_keep_mask_(x.mul(scale).contiguous(), keep.contiguous())


@_masked_scale.register_fake
def _(x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


def _masked_scale_context(ctx, inputs, output) -> None:  # noqa: ANN001
    ctx.save_for_backward(inputs[1])
    ctx.scale = inputs[2]


def _masked_scale_backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN202
    (keep,) = ctx.saved_tensors
    return _masked_scale(grad, keep, ctx.scale), None, None


_masked_scale.register_autograd(_masked_scale_backward, setup_context=_masked_scale_context)


@torch.library.custom_op("metamixer::keep_mask", mutates_args=())
def _keep_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """:func:`dropout_keep_mask` for ``x``'s shape and device as an operator (it draws from NumPy's SFC64 seeded by
    torch's generator, which ``torch.compile`` cannot trace)."""
    return dropout_keep_mask(x.shape, p, x.device)[0]


@_keep_mask.register_fake
def _(x: torch.Tensor, p: float) -> torch.Tensor:
    return torch.empty(x.shape, dtype=torch.bool, device=x.device)


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
    return _masked_scale(x, _keep_mask(x, p), dropout_scale(p))


def dropout_keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu",
                      out: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """:func:`fast_dropout`'s mask: a bool ``keep`` tensor of ``shape`` (kept with probability ``1 - p'``) and the
    inverted-dropout scale ``1 / (1 - p')``, where ``p' = round(p * 65536) / 65536`` (``0 <= p < 1``).

    Each element compares one 16-bit uniform with the threshold. On CPU the uniforms come from NumPy's SFC64
    (four per 64-bit output) seeded by one draw of torch's default generator, so ``torch.manual_seed`` still fixes
    the mask; ``out`` (CPU) receives the mask in place. SFC64 plus NumPy's vectorized compare cost ~0.9 ns per element against ~3 ns for torch's
    Mersenne-Twister ``random_`` and its scalar int16 compare (measured on one Xeon core)."""
    level = round(p * _DROPOUT_LEVELS) - _DROPOUT_LEVELS // 2
    numel = math.prod(shape)
    words = (numel + 3) // 4
    if torch.device(device).type == "cpu":
        seed = int(torch.randint(0, 2**62, (1,)).item())
        bits = np.random.SFC64(seed).random_raw(words).view(np.int16)[:numel]
        if out is not None:  # a contiguous bool CPU tensor of ``numel`` values (the fused FFN's mask buffer)
            np.greater_equal(bits, level, out=out.numpy().reshape(-1))
            return out.view(shape), dropout_scale(p)
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
