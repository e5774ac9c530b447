"""Channels-last inference kernels for 2-D FFNet blocks (``csrc/nhwc.c``): 1x1 convs with fused bias / GELU /
residual, the whole ConvFFN FFN with its hidden block kept in cache, depthwise convs with the same epilogues, and
the two fusions a block runs on: FFNified attention's depthwise pair and the ConvFFN with its depthwise conv.

Why: at inference an FFNet block is two depthwise convs, GELU and three 1x1 convs. PyTorch runs each as its own
pass over memory (the 2x wide FFN hidden tensor four times), and its exact GELU alone was a quarter of FFNetSR's
CPU time. These kernels read each activation once per fused step (see the C file for the blocking).

Tensors are channels-last ``[B, C, H, W]`` (memory ``[B, H, W, C]``), float32, on CPU. Every op has a PyTorch
reference path with the same result (up to float rounding), taken where the kernels are not available (no C
compiler, ``FFNET_NATIVE=0``, :func:`metamixer.kernels.native.disabled`), for other dtypes or devices, for
channel counts that are not a multiple of the build's vector width, and whenever autograd records (these kernels
have no backward): callers never need to check.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import native

__all__ = ["NhwcKernels", "nhwc_kernels", "PackedPointwise", "Depthwise", "pointwise", "mlp", "depthwise",
           "depthwise_gelu_depthwise", "depthwise_mlp", "to_channels_last"]

_ACTS = {None: 0, "gelu": 1}


class NhwcKernels:
    """ctypes wrappers of ``csrc/nhwc.c``; work is split across ``torch.get_num_threads()`` threads by pixels (1x1)
    or image rows (depthwise), on PyTorch's own OpenMP team where the build shares its runtime (see
    :class:`metamixer.kernels.native._TeamSplit`), else in a Python thread pool."""

    def __init__(self, library: ctypes.CDLL) -> None:
        i64, ptr, c_int = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
        self._pointwise, self._mlp, self._depthwise = library.nhwc_pointwise, library.nhwc_mlp, library.nhwc_depthwise
        self._pointwise.argtypes = [ptr] * 5 + [i64, i64, c_int, i64, i64]
        self._mlp.argtypes = [ptr] * 7 + [i64] * 4
        self._depthwise.argtypes = [ptr] * 5 + [i64] * 3 + [c_int] * 3 + [i64] * 2
        self._dw_gelu_dw, self._dw_mlp = library.nhwc_dw_gelu_dw, library.nhwc_dw_mlp
        self._dw_gelu_dw.argtypes = [ptr] * 7 + [i64] * 5
        self._dw_mlp.argtypes = [ptr] * 8 + [i64] * 6
        self._pointwise.restype = self._mlp.restype = self._dw_gelu_dw.restype = self._dw_mlp.restype = c_int
        self._depthwise.restype = None
        library.nhwc_vector_width.restype = c_int
        self.vector_width = int(library.nhwc_vector_width())
        self.panel = 3 * self.vector_width  # columns per packed weight panel (NV * VW in the C file)
        self._pixels = native._TeamSplit(library, "nhwc_openmp_runtime", 256)
        self._rows = native._TeamSplit(library, "nhwc_openmp_runtime", 2)
        self._pointwise_team = native._parallel_entry(library, "nhwc_pointwise_parallel", [ptr] * 5 + [i64, i64, c_int])
        self._mlp_team = native._parallel_entry(library, "nhwc_mlp_parallel", [ptr] * 7 + [i64, i64])
        self._depthwise_team = native._parallel_entry(library, "nhwc_depthwise_parallel",
                                                      [ptr] * 5 + [i64] * 3 + [c_int] * 3)
        self._dw_gelu_dw_team = native._parallel_entry(library, "nhwc_dw_gelu_dw_parallel", [ptr] * 7 + [i64] * 3)
        self._dw_mlp_team = native._parallel_entry(library, "nhwc_dw_mlp_parallel", [ptr] * 8 + [i64] * 4)
        for entry in (self._pointwise_team, self._mlp_team, self._dw_gelu_dw_team, self._dw_mlp_team):
            if entry is not None:
                entry.restype = c_int

    @staticmethod
    def _checked(status: list[int]) -> None:
        if any(s == -1 for s in status):
            raise MemoryError("metamixer nhwc kernels: no memory for the scratch block")
        if any(s == -2 for s in status):
            raise ValueError("metamixer nhwc kernels: channel counts must be multiples of the vector width")

    def pack(self, weight: torch.Tensor) -> torch.Tensor:
        """A 1x1 conv weight ``[N, K, 1, 1]`` as the C file's column panels of ``[K, N]``."""
        wt = weight.detach().reshape(weight.shape[0], -1).t().float()
        return torch.cat([wt[:, n0:n0 + self.panel].reshape(-1) for n0 in range(0, wt.shape[1], self.panel)])

    def pointwise(self, x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor, n: int, act: int,
                  residual: torch.Tensor | None, out: torch.Tensor) -> None:
        k = x.shape[1]
        res = residual.data_ptr() if residual is not None else None
        args = (x.data_ptr(), packed.data_ptr(), bias.data_ptr(), res, out.data_ptr(), k, n, act)
        self._checked(self._pixels(self._pointwise, self._pointwise_team, args, x.numel() // k))

    def mlp(self, x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
            hidden: int, residual: torch.Tensor | None, out: torch.Tensor) -> None:
        c = x.shape[1]
        res = residual.data_ptr() if residual is not None else None
        args = (x.data_ptr(), w1.data_ptr(), b1.data_ptr(), w2.data_ptr(), b2.data_ptr(), res, out.data_ptr(), c,
                hidden)
        self._checked(self._pixels(self._mlp, self._mlp_team, args, x.numel() // c))

    def depthwise(self, x: torch.Tensor, taps: torch.Tensor, bias: torch.Tensor, kh: int, kw: int, act: int,
                  residual: torch.Tensor | None, out: torch.Tensor) -> None:
        b, c, h, w = x.shape
        res = residual.data_ptr() if residual is not None else None
        args = (x.data_ptr(), taps.data_ptr(), bias.data_ptr(), res, out.data_ptr(), h, w, c, kh, kw, act)
        self._rows(self._depthwise, self._depthwise_team, args, b * h)

    def dw_gelu_dw(self, u: torch.Tensor, taps1: torch.Tensor, b1: torch.Tensor, taps2: torch.Tensor,
                   b2: torch.Tensor, residual: torch.Tensor | None, out: torch.Tensor) -> None:
        b, c, h, w = u.shape
        res = residual.data_ptr() if residual is not None else None
        args = (u.data_ptr(), taps1.data_ptr(), b1.data_ptr(), taps2.data_ptr(), b2.data_ptr(), res, out.data_ptr(),
                h, w, c)
        self._checked(self._rows(self._dw_gelu_dw, self._dw_gelu_dw_team, args, b * h))

    def dw_mlp(self, t: torch.Tensor, taps: torch.Tensor, bd: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
               w2: torch.Tensor, b2: torch.Tensor, hidden: int, out: torch.Tensor) -> None:
        b, c, h, w = t.shape
        args = (t.data_ptr(), taps.data_ptr(), bd.data_ptr(), w1.data_ptr(), b1.data_ptr(), w2.data_ptr(),
                b2.data_ptr(), out.data_ptr(), h, w, c, hidden)
        self._checked(self._rows(self._dw_mlp, self._dw_mlp_team, args, b * h))


def _self_check(kernels: NhwcKernels) -> None:
    """Each kernel against PyTorch on a ragged shape (pixels not a multiple of the row block, odd sides)."""
    g = torch.Generator().manual_seed(0)
    c, hidden = 2 * kernels.vector_width, 4 * kernels.vector_width
    x = torch.randn(2, c, 5, 7, generator=g).contiguous(memory_format=torch.channels_last)
    res = torch.randn(x.shape, generator=g).contiguous(memory_format=torch.channels_last)
    w1, b1 = torch.randn(hidden, c, 1, 1, generator=g) * 0.3, torch.randn(hidden, generator=g)
    w2, b2 = torch.randn(c, hidden, 1, 1, generator=g) * 0.3, torch.randn(c, generator=g)
    wd, bd = torch.randn(c, 1, 3, 5, generator=g), torch.randn(c, generator=g)
    out = torch.empty_like(x)
    kernels.mlp(x, kernels.pack(w1), b1, kernels.pack(w2), b2, hidden, res, out)
    worst = float((out - (F.conv2d(F.gelu(F.conv2d(x, w1, b1)), w2, b2) + res)).abs().max())
    out_h = torch.empty(2, hidden, 5, 7).contiguous(memory_format=torch.channels_last)
    kernels.pointwise(x, kernels.pack(w1), b1, hidden, 1, None, out_h)
    worst = max(worst, float((out_h - F.gelu(F.conv2d(x, w1, b1))).abs().max()))
    taps = wd.reshape(c, 15).t().contiguous()
    kernels.depthwise(x, taps, bd, 3, 5, 0, res, out)
    worst = max(worst, float((out - (F.conv2d(x, wd, bd, padding=(1, 2), groups=c) + res)).abs().max()))
    w3a, w3b = torch.randn(c, 1, 3, 3, generator=g), torch.randn(c, 1, 3, 3, generator=g)
    taps_a, taps_b = w3a.reshape(c, 9).t().contiguous(), w3b.reshape(c, 9).t().contiguous()
    kernels.dw_gelu_dw(x, taps_a, bd, taps_b, b2, res, out)
    ref = F.conv2d(F.gelu(F.conv2d(x, w3a, bd, padding=1, groups=c)), w3b, b2, padding=1, groups=c) + res
    worst = max(worst, float((out - ref).abs().max()))
    kernels.dw_mlp(res, taps_a, bd, kernels.pack(w1), b1, kernels.pack(w2), b2, hidden, out)
    ref = res + F.conv2d(F.gelu(F.conv2d(F.conv2d(res, w3a, bd, padding=1, groups=c), w1, b1)), w2, b2)
    worst = max(worst, float((out - ref).abs().max()))
    if not worst < 1e-3:
        raise native.NativeBuildError(f"nhwc kernels disagree with PyTorch by {worst:.3g} (expected < 1e-3)")


def nhwc_kernels() -> NhwcKernels | None:
    """The channels-last kernels, built on first call; None where not available (see :mod:`.native`)."""
    return native._load("nhwc.c", NhwcKernels, _self_check)


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """``x`` in channels-last memory (a no-op when it already is)."""
    return x.contiguous(memory_format=torch.channels_last)


def _usable(x: torch.Tensor, *channels: int) -> NhwcKernels | None:
    if x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() != 4 or (torch.is_grad_enabled() and
                                                                               x.requires_grad):
        return None
    kernels = nhwc_kernels()
    if kernels is None or any(c % kernels.vector_width for c in channels):
        return None
    return kernels


@dataclass
class PackedPointwise:
    """A 1x1 conv (``weight [N, K, 1, 1]``, ``bias [N]``) with its weight also packed for the C kernels."""

    weight: torch.Tensor
    bias: torch.Tensor
    packed: torch.Tensor | None

    @classmethod
    def from_conv(cls, weight: torch.Tensor, bias: torch.Tensor | None) -> PackedPointwise:
        weight = weight.detach().float().contiguous()
        bias = bias.detach().float().contiguous() if bias is not None else weight.new_zeros(weight.shape[0])
        kernels = nhwc_kernels()
        return cls(weight, bias, kernels.pack(weight) if kernels is not None else None)


def _new_like(x: torch.Tensor, channels: int, out: torch.Tensor | None = None,
              no_alias: tuple[torch.Tensor | None, ...] = ()) -> torch.Tensor:
    """The result buffer: ``out`` when it fits (shape, dtype, device, channels-last, not overlapping a tensor the
    kernel reads while writing), else a new channels-last tensor. Reusing a dead intermediate's buffer is what
    keeps a block's peak memory at three activations instead of five."""
    shape = (x.shape[0], channels, x.shape[2], x.shape[3])
    if (out is not None and tuple(out.shape) == shape and out.dtype == x.dtype and out.device == x.device
            and out.is_contiguous(memory_format=torch.channels_last)
            and not any(t is not None and t.untyped_storage().data_ptr() == out.untyped_storage().data_ptr()
                        for t in no_alias)):
        return out
    return torch.empty(shape, dtype=x.dtype, device=x.device).contiguous(memory_format=torch.channels_last)


def pointwise(x: torch.Tensor, conv: PackedPointwise, act: str | None = None,
              residual: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """``act(conv1x1(x)) (+ residual)``; written into ``out`` where it fits and overlaps neither ``x`` nor
    ``residual`` (the kernels' path; the PyTorch path returns a new tensor)."""
    n, k = conv.weight.shape[:2]
    kernels = _usable(x, n) if conv.packed is not None else None
    if kernels is None:
        y = F.conv2d(x, conv.weight, conv.bias)
        y = F.gelu(y) if act == "gelu" else y
        return y + residual if residual is not None else y
    x = to_channels_last(x)
    residual = to_channels_last(residual) if residual is not None else None
    out = _new_like(x, n, out, (x, residual))
    kernels.pointwise(x, conv.packed, conv.bias, n, _ACTS[act], residual, out)
    return out


def mlp(x: torch.Tensor, fc1: PackedPointwise, fc2: PackedPointwise,
        residual: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """``conv1x1_2(GELU(conv1x1_1(x))) (+ residual)``: the FFN of a ConvFFN. ``out`` may be ``x`` itself (a chunk
    of pixels is read whole into the hidden block before its outputs are written), not ``residual``."""
    hidden, c = fc1.weight.shape[:2]
    kernels = _usable(x, c, hidden) if fc1.packed is not None and fc2.packed is not None else None
    if kernels is None:
        y = F.conv2d(F.gelu(F.conv2d(x, fc1.weight, fc1.bias)), fc2.weight, fc2.bias)
        return y + residual if residual is not None else y
    x = to_channels_last(x)
    residual = to_channels_last(residual) if residual is not None else None
    out = _new_like(x, fc2.weight.shape[0], out, (residual,))
    kernels.mlp(x, fc1.packed, fc1.bias, fc2.packed, fc2.bias, hidden, residual, out)
    return out


def depthwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, taps: torch.Tensor | None = None,
              act: str | None = None, residual: torch.Tensor | None = None,
              out: torch.Tensor | None = None) -> torch.Tensor:
    """``act(dwconv(x, weight) + bias) (+ residual)`` with 'same' zero padding (odd kernels, stride 1).
    ``taps``: ``weight`` as ``[KH*KW, C]`` (pass it to avoid re-laying it out per call). ``out``: as in
    :func:`pointwise` (never ``x``: neighbouring rows are read after a row is written)."""
    c, _, kh, kw = weight.shape
    kernels = _usable(x)  # any channel count: the C loop finishes the channels past the last vector
    if kernels is None or kh % 2 == 0 or kw % 2 == 0:
        y = F.conv2d(x, weight, bias, padding=(kh // 2, kw // 2), groups=c)
        y = F.gelu(y) if act == "gelu" else y
        return y + residual if residual is not None else y
    x = to_channels_last(x)
    residual = to_channels_last(residual) if residual is not None else None
    taps = taps if taps is not None else weight.detach().reshape(c, kh * kw).t().contiguous()
    out = _new_like(x, c, out, (x, residual))
    kernels.depthwise(x, taps, bias, kh, kw, _ACTS[act], residual, out)
    return out


@dataclass
class Depthwise:
    """A depthwise conv (``weight [C, 1, KH, KW]``, ``bias [C]``) with its weight also laid out as the C kernels'
    taps ``[KH*KW, C]``."""

    weight: torch.Tensor
    bias: torch.Tensor
    taps: torch.Tensor

    @classmethod
    def from_conv(cls, weight: torch.Tensor, bias: torch.Tensor | None) -> Depthwise:
        weight = weight.detach().float().contiguous()
        bias = bias.detach().float().contiguous() if bias is not None else weight.new_zeros(weight.shape[0])
        return cls(weight, bias, weight.reshape(weight.shape[0], -1).t().contiguous())

    @property
    def is_3x3(self) -> bool:
        return tuple(self.weight.shape[-2:]) == (3, 3)


def depthwise_gelu_depthwise(u: torch.Tensor, first: Depthwise, second: Depthwise,
                             residual: torch.Tensor | None = None, out: torch.Tensor | None = None) -> torch.Tensor:
    """``second(GELU(first(u))) (+ residual)``: FFNified attention's depthwise pair. For 3x3 convs the kernels keep
    the GELU'd intermediate in a ring of three image rows (it never goes to memory); other kernel sizes run as two
    :func:`depthwise` calls. ``out`` may overlap neither ``u`` nor ``residual``."""
    c = u.shape[1]
    kernels = _usable(u, c) if u.dim() == 4 and first.is_3x3 and second.is_3x3 else None
    if kernels is None:
        v = depthwise(u, first.weight, first.bias, first.taps, act="gelu")
        return depthwise(v, second.weight, second.bias, second.taps, residual=residual, out=out)
    u = to_channels_last(u)
    residual = to_channels_last(residual) if residual is not None else None
    out = _new_like(u, c, out, (u, residual))
    kernels.dw_gelu_dw(u, first.taps, first.bias, second.taps, second.bias, residual, out)
    return out


def depthwise_mlp(t: torch.Tensor, dw: Depthwise, fc1: PackedPointwise, fc2: PackedPointwise,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """``t + fc2(GELU(fc1(dw(t))))``: the whole ConvFFN with its residual. For a 3x3 ``dw`` the kernels feed each
    chunk of a row's depthwise results straight into the FFN's product (the depthwise result never goes to
    memory); otherwise :func:`depthwise` then :func:`mlp`. ``out`` must not overlap ``t``."""
    hidden, c = fc1.weight.shape[:2]
    usable = t.dim() == 4 and dw.is_3x3 and fc1.packed is not None and fc2.packed is not None
    kernels = _usable(t, c, hidden) if usable else None
    if kernels is None:
        w = depthwise(t, dw.weight, dw.bias, dw.taps)
        return mlp(w, fc1, fc2, residual=t, out=w if out is None else out)
    t = to_channels_last(t)
    out = _new_like(t, c, out, (t,))
    kernels.dw_mlp(t, dw.taps, dw.bias, fc1.packed, fc1.bias, fc2.packed, fc2.bias, hidden, out)
    return out
