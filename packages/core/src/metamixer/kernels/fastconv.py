"""Depthwise 1-D convolution as a per-channel Toeplitz matmul.

Why: PyTorch's CPU depthwise ``conv1d`` with a long kernel (k=51) over a short sequence (48 patches) runs at
~0.5-1 GMAC/s, which makes FFNet-TS training ~7x slower than it needs to be. When the sequence is not longer than
the kernel, the same convolution is, per channel, an ``L x L`` Toeplitz matrix; building it from the kernel and
running one batched matmul over channels gives the identical result (forward and backward) at matmul speed.
On CPU (float32, AVX-512 or AVX2 + FMA builds) the products run through core's register-blocked C kernel
(:func:`metamixer.kernels.native.small_bmm_kernel`), 2.5-4x (AVX-512) / 1.8-2x (AVX2) faster than ``torch.bmm`` at
these 48 x 48 shapes. Short kernels (FFNet-TS's k=5 re-param branch) would still pay the full L x L product; on
channel-major input they run as a direct SIMD loop instead (:func:`direct_depthwise_conv1d_cbl`, 2.5-3x faster
than the product on either ISA).

The module *is* an ``nn.Conv1d`` (same ``weight``/``bias`` parameter names and shapes), so state_dict keys match
the official checkpoints and core's conv/BN fusion code treats it like any other conv.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import register_flop_formula

from metamixer.kernels.native import dwconv_kernels, select, small_bmm_kernel

__all__ = [
    "DepthwiseConv1dToeplitz", "toeplitz_depthwise_conv1d", "toeplitz_depthwise_conv1d_cbl", "depthwise_conv1d_cbl",
    "swap_depthwise_convs", "prefer_toeplitz", "direct_depthwise_conv1d_cbl", "DIRECT_MAX_KERNEL", "DIRECT_MAX_LENGTH",
]

Mode = Literal["auto", "toeplitz", "conv"]


def _toeplitz_index(length: int, kernel_size: int, padding: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Tap index ``k = j - i + padding`` for input position j, output position i, and its validity mask."""
    pos = torch.arange(length, device=device)
    tap = pos[:, None] - pos[None, :] + padding  # [L_in, L_out]
    valid = (tap >= 0) & (tap < kernel_size)
    return tap.clamp(0, kernel_size - 1), valid


@torch.library.custom_op("metamixer::toeplitz_product", mutates_args=())
def _toeplitz_product(x: torch.Tensor, toeplitz: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ toeplitz (+ bias)`` per channel through the C product kernel, as one operator (first-order
    gradients registered below)."""
    return _product_kernel()(x, toeplitz.contiguous(), bias)


@_toeplitz_product.register_fake
def _(x: torch.Tensor, toeplitz: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x.new_empty(x.shape[0], x.shape[1], toeplitz.shape[2])


@torch.library.custom_op("metamixer::toeplitz_product_backward", mutates_args=())
def _toeplitz_product_backward(grad: torch.Tensor, x: torch.Tensor, toeplitz: torch.Tensor, need_x: bool,
                               need_t: bool) -> tuple[torch.Tensor, torch.Tensor]:
    kernel, grad, toeplitz = _product_kernel(), grad.contiguous(), toeplitz.contiguous()
    grad_x = kernel(grad, toeplitz.transpose(1, 2).contiguous()) if need_x else x.new_empty(0)
    grad_t = kernel(x.transpose(1, 2), grad) if need_t else x.new_empty(0)  # x^T @ grad
    return grad_x, grad_t


@_toeplitz_product_backward.register_fake
def _(grad, x, toeplitz, need_x, need_t):  # noqa: ANN001, ANN202
    return (torch.empty_like(x) if need_x else x.new_empty(0)), (torch.empty_like(toeplitz) if need_t else x.new_empty(0))


def _toeplitz_context(ctx, inputs, output) -> None:  # noqa: ANN001
    ctx.save_for_backward(inputs[0], inputs[1])
    ctx.has_bias = inputs[2] is not None


def _toeplitz_grad(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN202
    x, toeplitz = ctx.saved_tensors
    need_x, need_t, need_b = ctx.needs_input_grad
    grad_x, grad_t = _toeplitz_product_backward(grad, x, toeplitz, need_x, need_t)
    grad_bias = grad.sum((1, 2)) if ctx.has_bias and need_b else None
    return (grad_x if need_x else None), (grad_t if need_t else None), grad_bias


_toeplitz_product.register_autograd(_toeplitz_grad, setup_context=_toeplitz_context)


@register_flop_formula(torch.ops.metamixer.toeplitz_product)
def _toeplitz_flops(x, toeplitz, bias, out_shape=None) -> int:  # noqa: ANN001
    """``[C, B, L_in] @ [C, L_in, L_out]``, counted as ``torch.bmm`` counts it (the flop counter cannot see
    inside an operator)."""
    return 2 * x[0] * x[1] * x[2] * toeplitz[2]


@register_flop_formula(torch.ops.metamixer.toeplitz_product_backward)
def _toeplitz_backward_flops(grad, x, toeplitz, need_x, need_t, out_shape=None) -> int:  # noqa: ANN001
    return 2 * x[0] * x[1] * x[2] * toeplitz[2] * (int(need_x) + int(need_t))


def _product_kernel():  # noqa: ANN202
    kernel = small_bmm_kernel()
    if kernel is None:
        raise RuntimeError("metamixer::toeplitz_product needs the C product kernel, which is not available here")
    return kernel


def _dw_kernels():  # noqa: ANN202
    kernels = dwconv_kernels()
    if kernels is None:
        raise RuntimeError("metamixer::dwconv_cbl needs the C depthwise-conv loop, which is not available here")
    return kernels


@torch.library.custom_op("metamixer::dwconv_cbl", mutates_args=())
def _dwconv_cbl(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """A short-kernel depthwise conv on channel-major ``[C, B, L]`` through core's C loop, as one operator."""
    return _dw_kernels().forward(x, weight.reshape(weight.shape[0], -1).contiguous(), bias)


@_dwconv_cbl.register_fake
def _(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return x.new_empty(x.shape)


@torch.library.custom_op("metamixer::dwconv_cbl_backward", mutates_args=())
def _dwconv_cbl_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, need_x: bool, need_w: bool,
                         need_b: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    kernels, grad = _dw_kernels(), grad.contiguous()
    w = weight.reshape(weight.shape[0], -1).contiguous()
    grad_x = kernels.forward(grad, w.flip(-1).contiguous()) if need_x else x.new_empty(0)
    grad_w, grad_b = x.new_empty(0), x.new_empty(0)
    if need_w or need_b:
        gw, gb = kernels.grad_weight(x, grad, w.shape[1], need_b)
        grad_w = gw.view(weight.shape) if need_w else grad_w
        grad_b = gb if need_b else grad_b
    return grad_x, grad_w, grad_b


@_dwconv_cbl_backward.register_fake
def _(grad, x, weight, need_x, need_w, need_b):  # noqa: ANN001, ANN202
    return ((torch.empty_like(x) if need_x else x.new_empty(0)), (torch.empty_like(weight) if need_w else x.new_empty(0)),
            (x.new_empty(weight.shape[0]) if need_b else x.new_empty(0)))


def _dwconv_context(ctx, inputs, output) -> None:  # noqa: ANN001
    ctx.save_for_backward(inputs[0], inputs[1])
    ctx.has_bias = inputs[2] is not None


def _dwconv_grad(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN202
    x, weight = ctx.saved_tensors
    need_x, need_w, need_b = ctx.needs_input_grad
    need_b = need_b and ctx.has_bias
    grad_x, grad_w, grad_b = _dwconv_cbl_backward(grad, x, weight, need_x, need_w, need_b)
    return (grad_x if need_x else None), (grad_w if need_w else None), (grad_b if need_b else None)


_dwconv_cbl.register_autograd(_dwconv_grad, setup_context=_dwconv_context)


@register_flop_formula(torch.ops.metamixer.dwconv_cbl)
def _dwconv_flops(x, weight, bias, out_shape=None) -> int:  # noqa: ANN001
    """As torch counts a depthwise ``conv1d`` of the same shape: 2 x taps per output value."""
    return 2 * x[0] * x[1] * x[2] * weight[-1]


@register_flop_formula(torch.ops.metamixer.dwconv_cbl_backward)
def _dwconv_backward_flops(grad, x, weight, need_x, need_w, need_b, out_shape=None) -> int:  # noqa: ANN001
    return 2 * x[0] * x[1] * x[2] * weight[-1] * (int(need_x) + int(need_w))


DIRECT_MAX_KERNEL, DIRECT_MAX_LENGTH = 15, 64  # the C loop's limits (a row in 4 AVX-512 or 8 AVX2 registers)


def direct_depthwise_conv1d_cbl(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, native: bool | None = None,
) -> torch.Tensor | None:
    """A depthwise stride-1 'same' conv with a short odd kernel (``<= DIRECT_MAX_KERNEL`` taps) over short rows
    (``<= DIRECT_MAX_LENGTH``) on channel-major ``[C, B, L]`` through core's SIMD C loop
    (:func:`metamixer.kernels.native.dwconv_kernels`), or None where that does not apply (no AVX-512/AVX2 build, other
    dtype/device, long kernel or rows; ``native=True``: an error instead). Rows must be contiguous."""
    k = weight.shape[-1]
    applies = (k % 2 == 1 and k <= DIRECT_MAX_KERNEL and x.shape[-1] <= DIRECT_MAX_LENGTH
               and (x.stride(-1) == 1 or x.shape[-1] == 1))
    use = select(native if applies else False, dwconv_kernels, "the C depthwise-conv loop", x, weight, bias)
    if native and not applies:
        raise RuntimeError(f"native=True: the C depthwise-conv loop takes odd kernels of <= {DIRECT_MAX_KERNEL} taps "
                           f"and rows of <= {DIRECT_MAX_LENGTH} positions with stride 1; got kernel {k}, shape "
                           f"{tuple(x.shape)}, strides {x.stride()}")
    return _dwconv_cbl(x, weight, bias) if use else None


def toeplitz_depthwise_conv1d(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int, native: bool | None = None,
) -> torch.Tensor:
    """``F.conv1d(x, weight, bias, padding=padding, groups=C)`` for stride 1 / dilation 1, computed as
    ``out[b, c] = x[b, c] @ T[c]`` with ``T[c][j, i] = weight[c, 0, j - i + padding]``.

    Only 'same'-length outputs (``2 * padding == kernel_size - 1``) are supported, which is what FFNet uses.
    ``native``: the C product kernel where available (None), always (True: an error where it is not), never.
    """
    return toeplitz_depthwise_conv1d_cbl(x.transpose(0, 1), weight, bias, padding, native).transpose(0, 1)


def toeplitz_depthwise_conv1d_cbl(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int, native: bool | None = None,
) -> torch.Tensor:
    """The same convolution on a channel-major ``[C, B, L]`` input, returning ``[C, B, L]``.

    Channel-major is the matmul's native layout (one ``[B, L] @ [L, L]`` product per channel), so a network that
    keeps its activations channel-major (FFNet-TS does) pays no transposes around the convolution.
    """
    channels, _, length = x.shape
    kernel_size = weight.shape[-1]
    tap, valid = _toeplitz_index(length, kernel_size, padding, x.device)
    w = weight.reshape(channels, kernel_size)
    toeplitz = w[:, tap] * valid.to(w.dtype)  # [C, L_in, L_out]
    if select(native, small_bmm_kernel, "the C product kernel (AVX-512 or AVX2 builds only)", x, weight, bias):
        return _toeplitz_product(x, toeplitz, bias)
    if bias is None:
        return torch.bmm(x, toeplitz)
    return torch.baddbmm(bias.view(channels, 1, 1), x, toeplitz)


TOEPLITZ_MIN_MAX_LEN = 64  # below this length the Toeplitz product wins for every kernel size (k=5 included)


def prefer_toeplitz(length: int, kernel_size: int, device: torch.device) -> bool:
    """The one rule for choosing the Toeplitz matmul over PyTorch's depthwise conv: on CPU, for sequences not
    longer than ``max(kernel_size, 64)``. Measured fwd+bwd on CPU, 448 channels: k=51 is 4-5x faster at
    L=24..48 with break-even around L=64-96 and 2-3x slower at L=150-300; k=5 still wins at L <= 64."""
    return device.type == "cpu" and length <= max(kernel_size, TOEPLITZ_MIN_MAX_LEN)


def depthwise_conv1d_cbl(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """Apply a depthwise stride-1 'same' ``conv`` to a channel-major ``[C, B, L]`` input -> contiguous ``[C, B, L]``.

    Toeplitz matmul where :func:`prefer_toeplitz` says so (or a :class:`DepthwiseConv1dToeplitz`'s forced mode),
    the native convolution otherwise.
    """
    if isinstance(conv, DepthwiseConv1dToeplitz):
        toeplitz = conv.use_toeplitz(x)
    else:
        toeplitz = prefer_toeplitz(x.shape[-1], conv.kernel_size[0], x.device)
    if toeplitz:
        forced = isinstance(conv, DepthwiseConv1dToeplitz) and conv.mode == "toeplitz"
        same = conv.padding[0] == conv.kernel_size[0] // 2
        out = None if forced or not same else direct_depthwise_conv1d_cbl(x, conv.weight, conv.bias)
        if out is not None:
            return out
        return toeplitz_depthwise_conv1d_cbl(x, conv.weight, conv.bias, conv.padding[0])
    out = F.conv1d(x.transpose(0, 1), conv.weight, conv.bias, padding=conv.padding, groups=conv.groups)
    return out.transpose(0, 1).contiguous()  # callers view the result channel-major


class DepthwiseConv1dToeplitz(nn.Conv1d):
    """A depthwise, stride-1, 'same' padded ``nn.Conv1d`` whose forward picks the faster of two equal algorithms.

    ``mode="auto"`` follows :func:`prefer_toeplitz` (Toeplitz matmul on CPU for short sequences, the native
    convolution for long ones and on CUDA, where cuDNN's depthwise kernel is already fast), or, when
    ``toeplitz_max_len`` is given, uses the Toeplitz path on CPU up to that length. ``"toeplitz"`` and ``"conv"``
    force one path.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        bias: bool = True,
        mode: Mode = "auto",
        toeplitz_max_len: int | None = None,
    ) -> None:
        if kernel_size % 2 != 1:
            raise ValueError(f"DepthwiseConv1dToeplitz needs an odd kernel for 'same' padding, got {kernel_size}")
        super().__init__(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels, bias=bias)
        self.mode = mode
        self.toeplitz_max_len = toeplitz_max_len

    def use_toeplitz(self, x: torch.Tensor) -> bool:
        if self.mode == "toeplitz":
            return True
        if self.mode == "conv":
            return False
        if self.toeplitz_max_len is not None:
            return x.device.type == "cpu" and x.shape[-1] <= self.toeplitz_max_len
        return prefer_toeplitz(x.shape[-1], self.kernel_size[0], x.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_toeplitz(x):
            return toeplitz_depthwise_conv1d(x, self.weight, self.bias, self.padding[0])
        return F.conv1d(x, self.weight, self.bias, padding=self.padding, groups=self.groups)

    @classmethod
    def from_conv(cls, conv: nn.Conv1d, mode: Mode = "auto") -> DepthwiseConv1dToeplitz:
        """A new module with a copy of ``conv``'s parameters (no aliasing)."""
        new = cls(conv.out_channels, conv.kernel_size[0], bias=conv.bias is not None, mode=mode)
        new = new.to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(conv.weight)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        return new


def _is_same_depthwise(conv: nn.Conv1d) -> bool:
    k = conv.kernel_size[0]
    return (
        conv.groups == conv.in_channels == conv.out_channels
        and conv.stride == (1,)
        and conv.dilation == (1,)
        and k % 2 == 1
        and conv.padding == (k // 2,)
        and conv.padding_mode == "zeros"
    )


def swap_depthwise_convs(module: nn.Module, min_kernel: int = 7, mode: Mode = "auto") -> nn.Module:
    """Replace (in place) every plain depthwise 'same' ``nn.Conv1d`` with ``kernel >= min_kernel`` by a
    :class:`DepthwiseConv1dToeplitz` holding the same parameters. Used after fusion, because core's fuse
    returns plain convs. Returns ``module``."""
    for name, child in list(module.named_children()):
        if type(child) is nn.Conv1d and _is_same_depthwise(child) and child.kernel_size[0] >= min_kernel:
            new = DepthwiseConv1dToeplitz.from_conv(child, mode=mode)
            new.train(child.training)
            setattr(module, name, new)
        else:
            swap_depthwise_convs(child, min_kernel, mode)
    return module
