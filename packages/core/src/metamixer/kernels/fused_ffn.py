"""A grouped pointwise FFN (1x1 conv -> dropout -> GELU -> regroup -> 1x1 conv) computed in cache-sized slices.

Why: FFNet-TS's FFNs expand every position to ``ffn_ratio * M * D`` hidden values (5,376 per patch for ETTm,
132 M floats in a 512-window batch). Run as whole-tensor ops, every step streams that hidden tensor through main
memory about fifteen times (matmul output, dropout mask, scale, GELU, regroup copy, and the same again backward),
and on a CPU core that memory traffic, not arithmetic, is most of the training step. Here the positions are
processed in slices whose hidden block fits in the L2 cache: the forward pass keeps only the input and a 1-byte
dropout mask, and the backward pass recomputes each slice's hidden block (one extra matmul) while it is still in
cache. Same math, same parameters, same dropout distribution as :func:`metamixer.kernels.dropout.fast_dropout`.
For float32 CPU inputs, the element-wise work between the two matmuls (GELU, mask, regroup; backward: GELU's
derivative, mask, ungroup, the bias gradient) runs as one fused C loop per slice
(:func:`metamixer.kernels.native.ffn_gelu_kernels`) where a C compiler is available, and as PyTorch ops otherwise.

Layout (channel-major, what FFNet-TS keeps inside its blocks): input ``[G1, C1, S]`` (G1 groups of the first conv,
S = batch x positions); the first conv maps each group's C1 channels to ``P*Q`` hidden channels; the hidden
channels are regrouped ``[G1, P, Q] -> [P, Q, G1]`` (group p of the second conv takes hidden unit q of every
first-conv group); the second conv maps each of its P groups' ``Q*G1`` channels to C2 outputs: ``[P, C2, S]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import register_flop_formula

from metamixer.kernels.autocast import autocast_dtype
from metamixer.kernels.dropout import apply_keep_mask_, dropout_keep_mask, dropout_scale
from metamixer.kernels.native import SmallBmmKernel, ffn_gelu_kernels, select, small_bmm_kernel

__all__ = ["grouped_ffn", "grouped_ffn_reference", "slice_length"]

_CACHE_BYTES = 1 << 21  # the hidden block of one slice: 2 MiB, the L2 of one current server core
# With the fused C kernels the element-wise work is one pass, so cache residency matters less than the matmuls'
# width: measured on FFNet-TS (Weather- and ETTh1-size FFNs, one core), steps got faster up to ~16 MiB blocks and
# at least 1024 positions per slice (4.6-4.7 s vs 5.4-5.6 s per Weather step at 256 positions).
_NATIVE_BLOCK_BYTES, _NATIVE_MIN_POSITIONS, _NATIVE_MAX_BLOCK_BYTES = 1 << 24, 1024, 1 << 28


@torch.compiler.assume_constant_result
def _threads() -> int:
    """The intra-op thread count as a trace-time constant (``torch.get_num_threads`` breaks a compiled graph)."""
    return torch.get_num_threads()


def slice_length(hidden_channels: int, total: int, cache_bytes: int | None = None, native: bool = False) -> int:
    """Positions per slice so that ``hidden_channels`` fp32 values per position fill about ``cache_bytes``
    (default: 2 MiB per intra-op thread, as each core has its own L2; at least 64 positions so the matmuls stay
    efficient; a multiple of 16). ``native`` (the fused C kernels run the element-wise work): blocks of 16 MiB
    per thread and at least 1024 positions, but no block above 256 MiB."""
    if native:
        block = (cache_bytes or _NATIVE_BLOCK_BYTES * _threads()) // (4 * hidden_channels)
        length = min(max(_NATIVE_MIN_POSITIONS, block), _NATIVE_MAX_BLOCK_BYTES // (4 * hidden_channels))
        return min(max(64, length // 16 * 16), total)
    cache_bytes = cache_bytes or _CACHE_BYTES * _threads()
    length = max(64, (cache_bytes // (4 * hidden_channels)) // 16 * 16)
    return min(length, total)


def _regroup(h: torch.Tensor, g1: int, p: int, q: int) -> torch.Tensor:
    """``[G1, P*Q, s]`` -> ``[P, Q*G1, s]`` (hidden unit ``(g1, p, q)`` moves to group p, channel ``q*G1 + g1``);
    ``p == 0`` means no regrouping (the second conv has the first conv's groups)."""
    if p == 0:
        return h
    s = h.shape[-1]
    return h.view(g1, p, q, s).permute(1, 2, 0, 3).reshape(p, q * g1, s)


def _ungroup(h: torch.Tensor, g1: int, p: int, q: int) -> torch.Tensor:
    """The inverse of :func:`_regroup`: ``[P, Q*G1, s]`` -> ``[G1, P*Q, s]``."""
    if p == 0:
        return h
    s = h.shape[-1]
    return h.view(p, q, g1, s).permute(2, 0, 1, 3).reshape(g1, p * q, s)


def _matmul(products: SmallBmmKernel | None, w: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None = None,
            out: torch.Tensor | None = None) -> torch.Tensor:
    """``w @ x (+ bias)`` per group (bias ``[G, rows, 1]``), written into ``out`` (a column slice) when given:
    through core's register-blocked C product kernel where it is available, else ``torch.bmm``. At the FFNs'
    shapes (e.g. ``[21, 768, 64] @ [21, 64, 1024]``) the kernel runs at 65-82 GFLOP/s on one AVX-512 core against
    BLAS's 50-68 (AVX2 EPYC: 32-38 against 22-30, ties at the memory-bound shapes), and it writes straight into the
    output slice."""
    if products is not None:
        return products(w, x, bias, out=out)
    y = torch.bmm(w, x) if bias is None else torch.baddbmm(bias, w, x)
    return y if out is None else out.copy_(y)


@torch.library.custom_op("metamixer::grouped_ffn", mutates_args=())
def _grouped_ffn_forward(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
                         p_drop: float, slice_len: int, regroup: bool, native: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The sliced FFN's forward as one operator: ``(out, keeps)``, where ``keeps`` holds every slice's dropout mask
    back to back (empty without dropout), the only activation-sized state the backward needs."""
    kernels = ffn_gelu_kernels() if native else None
    products = small_bmm_kernel() if kernels is not None else None  # AVX-512 / AVX2 builds only
    if products is not None and x.stride(-1) != 1:
        x = x.contiguous()  # the product kernel reads rows of positions
    g1, _, total = x.shape
    p_groups, c2, _ = w2.shape
    pq = w1.shape[1]
    q, rp = pq // p_groups, (p_groups if regroup else 0)
    scale = dropout_scale(p_drop) if p_drop > 0.0 else 1.0
    keeps = torch.empty(g1 * pq * total if p_drop > 0.0 else 0, dtype=torch.bool, device=x.device)
    out = x.new_empty(p_groups, c2, total)
    w1s, b1s = w1 * scale, (b1 * scale).view(g1, pq, 1)  # scale * h computed by the matmul itself
    b2v = b2.view(p_groups, c2, 1)
    for start in range(0, total, slice_len):
        stop = min(total, start + slice_len)
        # dropout before GELU: GELU(keep * scale * h) == keep * GELU(scale * h) because GELU(0) == 0
        h = _matmul(products, w1s, x[:, :, start:stop], b1s)
        keep = None
        if p_drop > 0.0:
            chunk = keeps[g1 * pq * start:g1 * pq * stop]
            keep = dropout_keep_mask(h.shape, p_drop, x.device, out=chunk if x.device.type == "cpu" else None)[0]
            if keep.data_ptr() != chunk.data_ptr():
                chunk.copy_(keep.reshape(-1))
        if kernels is not None:
            a = kernels.forward(h, keep, x.new_empty(p_groups, w2.shape[2], stop - start), rp, q)
        else:
            a = F.gelu(h)
            if keep is not None:
                apply_keep_mask_(a, keep)
            a = _regroup(a, g1, rp, q)
        _matmul(products, w2, a, b2v, out=out[:, :, start:stop])
    return out, keeps


@_grouped_ffn_forward.register_fake
def _(x, w1, b1, w2, b2, p_drop, slice_len, regroup, native):  # noqa: ANN001, ANN202
    g1, pq, total = w1.shape[0], w1.shape[1], x.shape[-1]
    keeps = x.new_empty(g1 * pq * total if p_drop > 0.0 else 0, dtype=torch.bool)
    return x.new_empty(w2.shape[0], w2.shape[1], total), keeps


@torch.library.custom_op("metamixer::grouped_ffn_backward", mutates_args=())
def _grouped_ffn_backward(grad_out: torch.Tensor, x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor,
                          w2: torch.Tensor, keeps: torch.Tensor, p_drop: float, slice_len: int, regroup: bool,
                          native: bool, need_x: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                               torch.Tensor]:
    """Gradients of :func:`_grouped_ffn_forward` for (x, w1, b1, w2, b2), recomputing each slice's hidden block
    while it is in cache; ``grad_x`` is empty when ``need_x`` is False."""
    kernels = ffn_gelu_kernels() if native else None
    products = small_bmm_kernel() if kernels is not None else None
    if products is not None and x.stride(-1) != 1:
        x = x.contiguous()
    g1, _, total = x.shape
    p_groups, c2, _ = w2.shape
    pq = w1.shape[1]
    q, rp = pq // p_groups, (p_groups if regroup else 0)
    scale = dropout_scale(p_drop) if p_drop > 0.0 else 1.0
    if products is not None and grad_out.stride(-1) != 1:
        grad_out = grad_out.contiguous()  # the product kernel reads rows of positions
    grad_x = torch.empty_like(x) if need_x else x.new_empty(0)
    grad_w1, grad_w2 = torch.zeros_like(w1), torch.zeros_like(w2)
    grad_b1 = torch.zeros(g1, pq, dtype=x.dtype, device=x.device)
    grad_b2 = torch.zeros(p_groups, c2, dtype=x.dtype, device=x.device)
    grad_b1_raw = torch.zeros(g1 * pq, dtype=x.dtype, device=x.device)  # the kernels' unscaled row sums
    # d/dh of GELU(scale * h): the factor `scale` is folded into the (small) weights and the accumulations
    w1s, b1s = w1 * scale, (b1 * scale).view(g1, pq, 1)
    w1t, w2t = w1s.transpose(1, 2), w2.transpose(1, 2)
    for start in range(0, total, slice_len):
        stop = min(total, start + slice_len)
        xs, gs = x[:, :, start:stop], grad_out[:, :, start:stop]
        h = _matmul(products, w1s, xs, b1s)  # recomputed, now in cache
        keep = keeps[g1 * pq * start:g1 * pq * stop].view(h.shape) if keeps.numel() else None
        if kernels is not None:
            grad_a = _matmul(products, w2t, gs)  # regrouped layout
            a, grad_h = torch.empty_like(grad_a), torch.empty_like(h)  # grad_h: d loss / d (scale * h)
            kernels.backward(h, keep, grad_a, a, grad_h, grad_b1_raw, rp, q)
            grad_w2.baddbmm_(gs, a.transpose(1, 2))
        else:
            a = F.gelu(h)
            if keep is not None:
                apply_keep_mask_(a, keep)
            grad_w2.baddbmm_(gs, _regroup(a, g1, rp, q).transpose(1, 2))
            grad_a = _ungroup(torch.bmm(w2t, gs), g1, rp, q)
            if keep is not None:
                apply_keep_mask_(grad_a, keep)
            grad_h = torch.ops.aten.gelu_backward(grad_a, h)  # d loss / d (scale * h)
            grad_b1.add_(grad_h.sum(-1), alpha=scale)
        grad_b2 += gs.sum(-1)
        grad_w1.baddbmm_(grad_h, xs.transpose(1, 2), alpha=scale)
        if need_x:
            _matmul(products, w1t, grad_h, out=grad_x[:, :, start:stop])
    if kernels is not None:
        grad_b1 = grad_b1_raw.mul_(scale)
    return grad_x, grad_w1, grad_b1.view(-1), grad_w2, grad_b2.view(-1)


@_grouped_ffn_backward.register_fake
def _(grad_out, x, w1, b1, w2, keeps, p_drop, slice_len, regroup, native, need_x):  # noqa: ANN001, ANN202
    grad_x = torch.empty_like(x) if need_x else x.new_empty(0)
    return grad_x, torch.empty_like(w1), x.new_empty(b1.numel()), torch.empty_like(w2), x.new_empty(w2.shape[0] * w2.shape[1])


def _grouped_ffn_context(ctx, inputs, output) -> None:  # noqa: ANN001
    x, w1, b1, w2, _b2, p_drop, slice_len, regroup, native = inputs
    ctx.save_for_backward(x, w1, b1, w2, output[1])
    ctx.options = (p_drop, slice_len, regroup, native)


def _grouped_ffn_grad(ctx, grad_out: torch.Tensor, _grad_keeps: torch.Tensor):  # noqa: ANN001, ANN202
    x, w1, b1, w2, keeps = ctx.saved_tensors
    need_x = ctx.needs_input_grad[0]
    grads = _grouped_ffn_backward(grad_out, x, w1, b1, w2, keeps, *ctx.options, need_x)
    return (grads[0] if need_x else None), *grads[1:], None, None, None, None


_grouped_ffn_forward.register_autograd(_grouped_ffn_grad, setup_context=_grouped_ffn_context)


def _ffn_products(x_shape, w1_shape, w2_shape) -> tuple[int, int]:  # noqa: ANN001
    """FLOPs of one pass of each of the two grouped products over all positions (``w1 @ x``, ``w2 @ a``)."""
    g1, c_in, total = x_shape
    p_groups, c2, qg1 = w2_shape
    return 2 * g1 * w1_shape[1] * c_in * total, 2 * p_groups * c2 * qg1 * total


@register_flop_formula(torch.ops.metamixer.grouped_ffn)
def _grouped_ffn_flops(x, w1, b1, w2, b2, *_options, out_shape=None) -> int:  # noqa: ANN001
    """The flop counter cannot see inside an operator: report its two products, as ``torch.bmm`` would."""
    first, second = _ffn_products(x, w1, w2)
    return first + second


@register_flop_formula(torch.ops.metamixer.grouped_ffn_backward)
def _grouped_ffn_backward_flops(grad_out, x, w1, b1, w2, keeps, p_drop, slice_len, regroup, native, need_x,
                                out_shape=None) -> int:  # noqa: ANN001
    """The recomputed ``w1 @ x``, grad_w2 and grad_a (each the second product's size), grad_w1, and grad_x when
    it is needed."""
    first, second = _ffn_products(x, w1, w2)
    return first * (3 if need_x else 2) + 2 * second


def _weights(x: torch.Tensor, conv1: nn.Conv1d, conv2: nn.Conv1d, regroup: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The convs' weights as batched matrices ``[G1, P*Q, C1]`` and ``[P, C2, Q*G1]``, after checking the shapes."""
    g1, c1, _ = x.shape
    if conv1.groups != g1 or conv1.in_channels != g1 * c1 or conv1.kernel_size != (1,):
        raise ValueError(f"grouped_ffn: conv1 ({conv1}) is not a 1x1 conv over {g1} groups of {c1} channels")
    if conv1.bias is None or conv2.bias is None:
        raise ValueError("grouped_ffn: both 1x1 convs need a bias")
    p_groups = conv2.groups
    w1 = conv1.weight.view(g1, conv1.out_channels // g1, c1)
    w2 = conv2.weight.view(p_groups, conv2.out_channels // p_groups, conv2.in_channels // p_groups)
    fits = w2.shape[2] == (w1.shape[1] // p_groups) * g1 and w1.shape[1] % p_groups == 0
    if not regroup:
        fits = p_groups == g1 and w2.shape[2] == w1.shape[1]
    if not fits or conv2.kernel_size != (1,):
        raise ValueError(f"grouped_ffn: conv2 ({conv2}) cannot take the hidden channels of {conv1} (regroup={regroup})")
    return w1, w2


def grouped_ffn(
    x: torch.Tensor, conv1: nn.Conv1d, conv2: nn.Conv1d, p_drop: float = 0.0, training: bool = False,
    regroup: bool = True, slice_len: int | None = None, native: bool | None = None,
) -> torch.Tensor:
    """``conv2(regroup(GELU(dropout(conv1(x)))))`` on channel-major ``x = [G1, C1, S]`` -> ``[P, C2, S]``.

    ``conv1``/``conv2`` are grouped 1x1 ``Conv1d`` modules with biases (``conv1.groups == G1``,
    ``conv2.groups == P``); their own parameters are used, so state_dicts and fusion code are unaffected.
    ``regroup=False``: the second conv has the first's groups (``P == G1``) and takes each group's hidden
    channels as they are. Dropout (probability ``p_drop``, only when ``training``) follows
    :func:`~metamixer.kernels.dropout.fast_dropout`'s rule. The result equals :func:`grouped_ffn_reference` for the same
    dropout mask; gradients agree to float rounding. ``slice_len`` (positions per slice) defaults to
    :func:`slice_length` (which picks longer slices for the fused kernels). ``native``: use the fused C kernels (True: required, error if unavailable), never
    (False), or where available (None: float32 CPU inputs and parameters, a C compiler, ``FFNET_NATIVE`` not 0).
    """
    w1, w2 = _weights(x, conv1, conv2, regroup)
    b1, b2 = conv1.bias, conv2.bias
    drop = p_drop if training else 0.0
    dtype = autocast_dtype(x)
    if dtype is not None:  # under autocast: every operand in its dtype, as for the convs (see autocast_dtype)
        with torch.autocast(x.device.type, enabled=False):
            return _grouped_ffn(x.to(dtype), w1.to(dtype), b1.to(dtype), w2.to(dtype), b2.to(dtype), drop, regroup,
                                slice_len, native)
    return _grouped_ffn(x, w1, b1, w2, b2, drop, regroup, slice_len, native)


def _grouped_ffn(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
                 drop: float, regroup: bool, slice_len: int | None, native: bool | None) -> torch.Tensor:
    use_native = select(native, ffn_gelu_kernels, "grouped_ffn's fused C kernels", x, w1, w2)
    length = slice_len or slice_length(w1.shape[0] * w1.shape[1], x.shape[-1], native=use_native)
    return _grouped_ffn_forward(x, w1, b1, w2, b2, drop, length, regroup, use_native)[0]


def grouped_ffn_reference(
    x: torch.Tensor, conv1: nn.Conv1d, conv2: nn.Conv1d, keep: torch.Tensor | None = None, scale: float = 1.0,
    regroup: bool = True,
) -> torch.Tensor:
    """The same FFN as whole-tensor ops (the specification :func:`grouped_ffn` is tested against); ``keep`` is
    a ``[G1, P*Q, S]`` dropout mask (None: no dropout) and ``scale`` its ``1 / (1 - p)``."""
    w1, w2 = _weights(x, conv1, conv2, regroup)
    g1, p_groups = w1.shape[0], w2.shape[0]
    h = torch.baddbmm(conv1.bias.view(g1, -1, 1), w1, x)
    if keep is not None:
        h = h * keep * scale
    a = F.gelu(h)
    q = w1.shape[1] // p_groups
    return torch.baddbmm(conv2.bias.view(p_groups, -1, 1), w2, _regroup(a, g1, p_groups if regroup else 0, q))
