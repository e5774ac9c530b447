"""metamixer.kernels.fastconv: depthwise conv1d as per-channel Toeplitz matmuls equals F.conv1d, forward and backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metamixer.kernels.fastconv import (
    DepthwiseConv1dToeplitz,
    depthwise_conv1d_cbl,
    prefer_toeplitz,
    swap_depthwise_convs,
    toeplitz_depthwise_conv1d,
    toeplitz_depthwise_conv1d_cbl,
)


@pytest.mark.parametrize("length,kernel", [(48, 51), (20, 51), (48, 5), (100, 51), (7, 3)])
def test_toeplitz_depthwise_equals_conv1d_forward_and_backward(length: int, kernel: int) -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(6, 6, kernel, padding=kernel // 2, groups=6)
    fast = DepthwiseConv1dToeplitz.from_conv(conv, mode="toeplitz")
    x1 = torch.randn(4, 6, length, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_(True)
    y1, y2 = conv(x1), fast(x2)
    assert torch.allclose(y1, y2, atol=1e-5)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    assert torch.allclose(x1.grad, x2.grad, atol=1e-5)
    assert torch.allclose(conv.weight.grad, fast.weight.grad, atol=1e-4)
    assert torch.allclose(conv.bias.grad, fast.bias.grad, atol=1e-4)
    ref = F.conv1d(x1.detach(), conv.weight, None, padding=kernel // 2, groups=6)
    assert torch.allclose(toeplitz_depthwise_conv1d(x1.detach(), conv.weight, None, kernel // 2), ref, atol=1e-5)


def test_swap_depthwise_keeps_keys_and_values() -> None:
    seq = torch.nn.Sequential(torch.nn.Conv1d(4, 4, 51, padding=25, groups=4), torch.nn.Conv1d(4, 8, 1))
    keys = {k: v.clone() for k, v in seq.state_dict().items()}
    swap_depthwise_convs(seq)
    assert isinstance(seq[0], DepthwiseConv1dToeplitz) and type(seq[1]) is torch.nn.Conv1d
    assert all(torch.equal(keys[k], v) for k, v in seq.state_dict().items())



def test_auto_mode_uses_toeplitz_only_for_short_cpu_sequences() -> None:
    """One rule (prefer_toeplitz) for modules and plain convs: CPU and L <= max(kernel, 64); an explicit
    toeplitz_max_len overrides it."""
    conv = DepthwiseConv1dToeplitz(4, 51)
    assert conv.use_toeplitz(torch.zeros(1, 4, 48)) and conv.use_toeplitz(torch.zeros(1, 4, 64))
    assert not conv.use_toeplitz(torch.zeros(1, 4, 65))
    assert prefer_toeplitz(64, 5, torch.device("cpu")) and not prefer_toeplitz(65, 5, torch.device("cpu"))
    assert prefer_toeplitz(101, 101, torch.device("cpu")) and not prefer_toeplitz(48, 51, torch.device("meta"))
    limited = DepthwiseConv1dToeplitz(4, 51, toeplitz_max_len=51)
    assert limited.use_toeplitz(torch.zeros(1, 4, 51)) and not limited.use_toeplitz(torch.zeros(1, 4, 52))
    conv.mode = "conv"
    assert not conv.use_toeplitz(torch.zeros(1, 4, 48))


@pytest.mark.parametrize("length,kernel,mode", [(48, 51, "auto"), (48, 5, "plain"), (100, 51, "auto"), (30, 13, "conv")])
def test_channel_major_depthwise_equals_conv1d(length: int, kernel: int, mode: str) -> None:
    """depthwise_conv1d_cbl on [C, B, L] == F.conv1d on [B, C, L], by every path (Toeplitz, native conv, plain)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(6, 6, kernel, padding=kernel // 2, groups=6)
    module = conv if mode == "plain" else DepthwiseConv1dToeplitz.from_conv(conv, mode=mode)
    x = torch.randn(4, 6, length)
    xc = x.transpose(0, 1).contiguous().requires_grad_(True)
    y = depthwise_conv1d_cbl(xc, module)
    assert y.shape == (6, 4, length) and y.is_contiguous()
    weight = conv.weight.detach().clone()
    ref = F.conv1d(x.requires_grad_(True), weight, conv.bias.detach(), padding=kernel // 2, groups=6)
    assert torch.allclose(y.transpose(0, 1), ref, atol=1e-5)
    g = torch.randn_like(ref)
    ref.backward(g)
    y.backward(g.transpose(0, 1))
    assert torch.allclose(xc.grad.transpose(0, 1), x.grad, atol=1e-5)
    weight.requires_grad_(True)
    ref_w = torch.autograd.grad(F.conv1d(x.detach(), weight, None, padding=kernel // 2, groups=6), weight, g)[0]
    assert torch.allclose(module.weight.grad, ref_w, atol=1e-4)
    assert torch.allclose(toeplitz_depthwise_conv1d_cbl(xc.detach(), conv.weight, conv.bias, kernel // 2), y, atol=1e-5)


def _simd_kernel_or_skip(source: str = "small_bmm.c") -> None:
    """Skip only where no compiler exists or the build has no SIMD path (neither AVX-512 nor AVX2 + FMA); a build
    that fails is a test failure. test_native_isa.py tests the narrower paths of the same CPU too."""
    from metamixer.kernels import native

    if native._compiler() is None:
        pytest.skip("no C compiler")
    wrapper, check = {"small_bmm.c": (native.SmallBmmKernel, native._small_bmm_self_check),
                      "dwconv_small.c": (native.DwConvKernels, native._dwconv_self_check)}[source]
    built = native._load(source, wrapper, check)
    assert built is not None, f"a C compiler is on the PATH but {source} did not build or self-check"
    if not built.vectorized:
        pytest.skip("the build has no SIMD path here (the kernel is only offered with one)")


@pytest.mark.parametrize("batch,length,kernel", [(13, 48, 51), (16, 37, 51), (9, 100, 51), (24, 48, 5)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_c_product_kernel_equals_the_bmm_path(batch: int, length: int, kernel: int, with_bias: bool) -> None:
    """native=True (C kernel: 8-row blocks plus a row tail, 48-column blocks plus a masked tail) == native=False
    (torch.bmm), forward and every gradient; also for a non-contiguous (transposed) input."""
    _simd_kernel_or_skip()
    torch.manual_seed(0)
    channels, padding = 5, kernel // 2
    weight = torch.randn(channels, 1, kernel, requires_grad=True)
    bias = torch.randn(channels, requires_grad=True) if with_bias else None
    base = torch.randn(batch, channels, length, requires_grad=True)
    grad = torch.randn(channels, batch, length)
    results = []
    for native_path in (True, False):
        x = base.transpose(0, 1)  # [C, B, L] view, not contiguous
        y = toeplitz_depthwise_conv1d_cbl(x, weight, bias, padding, native=native_path)
        inputs = [base, weight] + ([bias] if with_bias else [])
        results.append([y, *torch.autograd.grad(y, inputs, grad)])
        assert y.grad_fn is not None and ("metamixer_toeplitz_product" in type(y.grad_fn).__name__) == native_path
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    reference = F.conv1d(base.detach(), weight.detach(), None if bias is None else bias.detach(), padding=padding,
                         groups=channels)
    torch.testing.assert_close(results[0][0].transpose(0, 1), reference, rtol=1e-5, atol=1e-5)


def test_c_product_kernel_is_not_used_for_other_dtypes() -> None:
    x = torch.randn(3, 4, 48, dtype=torch.float64)
    weight = torch.randn(3, 1, 51, dtype=torch.float64)
    y = toeplitz_depthwise_conv1d_cbl(x, weight, None, 25)
    assert y.dtype == torch.float64 and "metamixer_toeplitz_product" not in type(y.grad_fn or object()).__name__
    with pytest.raises(RuntimeError, match="float32 CPU"):
        toeplitz_depthwise_conv1d_cbl(x, weight, None, 25, native=True)


@pytest.mark.parametrize("batch,length,kernel", [(13, 48, 5), (4, 3, 5), (9, 20, 15), (6, 33, 3), (5, 64, 7), (3, 17, 13)])
@pytest.mark.parametrize("with_bias", [True, False])
def test_direct_c_loop_equals_conv1d(batch: int, length: int, kernel: int, with_bias: bool) -> None:
    """The short-kernel C loop (forward; input gradient as the reversed kernel; weight and bias gradients) on a
    channel-major view with strided channels == F.conv1d on [B, C, L]; rows shorter than the kernel included."""
    from metamixer.kernels.fastconv import direct_depthwise_conv1d_cbl

    _simd_kernel_or_skip("dwconv_small.c")
    torch.manual_seed(0)
    channels = 7
    weight = torch.randn(channels, 1, kernel, requires_grad=True)
    bias = torch.randn(channels, requires_grad=True) if with_bias else None
    base = torch.randn(batch, channels, length, requires_grad=True)
    grad = torch.randn(batch, channels, length)
    inputs = [base, weight] + ([bias] if with_bias else [])
    y = direct_depthwise_conv1d_cbl(base.transpose(0, 1), weight, bias, native=True)
    assert "metamixer_dwconv_cbl" in type(y.grad_fn).__name__ and y.is_contiguous()
    got = [y.transpose(0, 1), *torch.autograd.grad(y, inputs, grad.transpose(0, 1))]
    reference = F.conv1d(base, weight, bias, padding=kernel // 2, groups=channels)
    want = [reference, *torch.autograd.grad(reference, inputs, grad)]
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_direct_c_loop_declines_long_or_even_kernels_and_long_rows() -> None:
    from metamixer.kernels.fastconv import DIRECT_MAX_KERNEL, direct_depthwise_conv1d_cbl

    x = torch.randn(3, 4, 48)
    assert direct_depthwise_conv1d_cbl(x, torch.randn(3, 1, DIRECT_MAX_KERNEL + 2), None) is None
    assert direct_depthwise_conv1d_cbl(x, torch.randn(3, 1, 4), None) is None
    assert direct_depthwise_conv1d_cbl(x.double(), torch.randn(3, 1, 5).double(), None) is None
    assert direct_depthwise_conv1d_cbl(torch.randn(3, 4, 65), torch.randn(3, 1, 5), None) is None  # rows > 64
    with pytest.raises(RuntimeError, match="odd kernels"):
        direct_depthwise_conv1d_cbl(x, torch.randn(3, 1, 51), None, native=True)
