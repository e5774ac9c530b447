"""metamixer.kernels.fused_ffn.grouped_ffn: the cache-sliced FFN equals the whole-tensor FFN, forward and backward."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from metamixer.kernels import native
from metamixer.kernels.dropout import dropout_keep_mask
from metamixer.kernels.fused_ffn import grouped_ffn, grouped_ffn_reference, slice_length

# (G1 groups of conv1, C1 channels per group, P groups of conv2, Q hidden units per (group, p), C2, regroup)
LAYOUTS = {
    "channel_mixer": (7, 16, 16, 3, 7, True),  # per variable D -> D*r, then per feature r*M -> M
    "token_mixer": (16, 7, 7, 2, 16, True),  # per feature M -> 2M, then per variable 2D -> D
    "no_regroup": (5, 8, 5, 12, 8, False),  # channel-independent: both convs per variable
}


def _convs(g1: int, c1: int, p: int, q: int, c2: int, regroup: bool) -> tuple[nn.Conv1d, nn.Conv1d]:
    hidden = g1 * p * q
    conv1 = nn.Conv1d(g1 * c1, hidden, 1, groups=g1)
    conv2 = nn.Conv1d(hidden, p * c2, 1, groups=p)
    return conv1, conv2


def _replayed_mask(seed: int, g1: int, hidden_per_group: int, total: int, length: int, p: float) -> tuple[torch.Tensor, float]:
    """The masks grouped_ffn drew slice by slice after ``torch.manual_seed(seed)``, as one ``[G1, PQ, S]`` mask."""
    torch.manual_seed(seed)
    masks, scale = [], 1.0
    for start in range(0, total, length):
        keep, scale = dropout_keep_mask((g1, hidden_per_group, min(total, start + length) - start), p)
        masks.append(keep)
    return torch.cat(masks, dim=-1), scale


# native=True demands the kernels (an error if they did not build), so it is skipped only where no compiler exists
NATIVE = [False, pytest.param(True, marks=pytest.mark.skipif(native._compiler() is None, reason="no C compiler"))]


@pytest.mark.parametrize("native", NATIVE)  # the fused C kernels and the PyTorch path
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("length", [64, 100])  # 100: the last slice is shorter
def test_matches_reference_with_dropout(layout: str, length: int, native: bool) -> None:
    g1, c1, p, q, c2, regroup = LAYOUTS[layout]
    torch.manual_seed(1)
    conv1, conv2 = _convs(g1, c1, p, q, c2, regroup)
    total = 250
    x = torch.randn(g1, c1, total, requires_grad=True)
    grad_out = torch.randn(p, c2, total)
    params = [x, conv1.weight, conv1.bias, conv2.weight, conv2.bias]

    torch.manual_seed(7)
    y = grouped_ffn(x, conv1, conv2, 0.6, training=True, regroup=regroup, slice_len=length, native=native)
    grads = torch.autograd.grad(y, params, grad_out)

    keep, scale = _replayed_mask(7, g1, p * q, total, length, 0.6)
    assert 0.3 < keep.float().mean().item() < 0.5  # ~40 % kept: the mask really drops
    reference = grouped_ffn_reference(x, conv1, conv2, keep, scale, regroup=regroup)
    expected = torch.autograd.grad(reference, params, grad_out)
    torch.testing.assert_close(y, reference, rtol=1e-5, atol=1e-5)
    for got, want in zip(grads, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_eval_and_p_zero_are_deterministic_and_mask_free() -> None:
    g1, c1, p, q, c2, regroup = LAYOUTS["channel_mixer"]
    conv1, conv2 = _convs(g1, c1, p, q, c2, regroup)
    x = torch.randn(g1, c1, 130)
    reference = grouped_ffn_reference(x, conv1, conv2)
    torch.testing.assert_close(grouped_ffn(x, conv1, conv2, 0.6, training=False, slice_len=64), reference)
    torch.testing.assert_close(grouped_ffn(x, conv1, conv2, 0.0, training=True), reference)


def test_strided_input_and_saved_tensors() -> None:
    """The token mixer passes a transposed view; autograd saves x, the weights and the 1-byte dropout masks, never
    a float hidden activation."""
    g1, c1, p, q, c2, regroup = LAYOUTS["token_mixer"]
    conv1, conv2 = _convs(g1, c1, p, q, c2, regroup)
    base = torch.randn(c1, g1, 200, requires_grad=True)  # [M, D, S]; the FFN takes [D, M, S]
    saved: list[tuple[torch.dtype, int]] = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        saved.append((tensor.dtype, tensor.numel()))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        y = grouped_ffn(base.transpose(0, 1), conv1, conv2, 0.3, training=True, slice_len=64)
    hidden = g1 * p * q * 200
    floats = sum(n for dtype, n in saved if dtype == torch.float32)
    params = conv1.weight.numel() + conv1.bias.numel() + conv2.weight.numel()
    assert floats == base.numel() + params and floats < hidden
    assert [n for dtype, n in saved if dtype == torch.bool] == [hidden]
    y.sum().backward()
    assert base.grad is not None and base.grad.shape == base.shape and base.grad.abs().sum() > 0


@pytest.mark.skipif(native._compiler() is None, reason="no C compiler")
def test_native_paths_take_any_input_and_gradient_layout() -> None:
    """The C product kernel reads rows of positions: an input whose positions are strided (every second one) and a
    stride-0 gradient (from ``.sum()``) must give what the PyTorch path gives."""
    g1, c1, p, q, c2, regroup = LAYOUTS["channel_mixer"]
    conv1, conv2 = _convs(g1, c1, p, q, c2, regroup)
    base = torch.randn(g1, c1, 400)
    results = []
    for use_native in (True, False):
        x = base.clone().requires_grad_()
        torch.manual_seed(3)
        y = grouped_ffn(x[:, :, ::2], conv1, conv2, 0.3, training=True, slice_len=64, native=use_native)
        grads = torch.autograd.grad(y.sum(), [x, conv1.weight, conv2.weight, conv1.bias])
        results.append((y, *grads))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_slice_length_and_bad_shapes() -> None:
    assert slice_length(7 * 64 * 12, 10**6, 1 << 21) == 96 and slice_length(7 * 64 * 12, 10**6, 1 << 23) == 384
    # fused kernels: 16 MiB blocks, at least 1024 positions, at most 256 MiB per block
    assert slice_length(7 * 128, 10**6, 1 << 24, native=True) == 4672
    assert slice_length(21 * 768, 10**6, 1 << 24, native=True) == 1024
    assert slice_length(862 * 128, 10**6, 1 << 24, native=True) == 608
    assert slice_length(100, 50) == 50
    conv1, conv2 = _convs(7, 16, 16, 3, 7, True)
    with pytest.raises(ValueError, match="conv1"):
        grouped_ffn(torch.randn(8, 16, 10), conv1, conv2)
    with pytest.raises(ValueError, match="conv2"):
        grouped_ffn(torch.randn(7, 16, 10), conv1, nn.Conv1d(7 * 48, 14, 1, groups=7))


@pytest.mark.parametrize("native", NATIVE)
def test_backward_twice_with_retained_graph_gives_the_same_gradients(native: bool) -> None:
    g1, c1, p, q, c2, regroup = LAYOUTS["channel_mixer"]
    conv1, conv2 = _convs(g1, c1, p, q, c2, regroup)
    x = torch.randn(g1, c1, 150, requires_grad=True)
    y = grouped_ffn(x, conv1, conv2, 0.5, training=True, slice_len=64, native=native)
    first = torch.autograd.grad(y.sum(), x, retain_graph=True)[0]
    second = torch.autograd.grad(y.sum(), x)[0]
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_native_required_but_not_applicable_is_a_clear_error() -> None:
    conv1, conv2 = _convs(7, 16, 16, 3, 7, True)
    with pytest.raises(RuntimeError, match="float32 CPU"):
        grouped_ffn(torch.randn(7, 16, 10, dtype=torch.float64), conv1.double(), conv2.double(), native=True)


@pytest.mark.parametrize("x_dtype", [torch.float32, torch.bfloat16])  # input from an fp32 op (a norm) or a matmul
def test_under_autocast_forward_and_backward_run_in_one_dtype(x_dtype: torch.dtype) -> None:
    """Under bf16 autocast the FFN computes as its two convs would (every operand bf16) and its backward, which
    autograd runs outside autocast, meets no fp32/bf16 mix; gradients reach the fp32 parameters in fp32."""
    g1, c1, p, q, c2, regroup = LAYOUTS["channel_mixer"]
    torch.manual_seed(3)
    conv1, conv2 = _convs(g1, c1, p, q, c2, regroup)
    base = torch.randn(g1, c1, 96)
    x = base.to(x_dtype).requires_grad_()
    params = [conv1.weight, conv1.bias, conv2.weight, conv2.bias]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = grouped_ffn(x, conv1, conv2, 0.0, training=True, regroup=regroup)
    assert y.dtype == torch.bfloat16
    grads = torch.autograd.grad(y.float().square().sum(), [x, *params])
    assert grads[0].dtype == x_dtype and all(g.dtype == torch.float32 for g in grads[1:])

    x32 = base.clone().requires_grad_()
    y32 = grouped_ffn(x32, conv1, conv2, 0.0, training=True, regroup=regroup)
    want = torch.autograd.grad(y32.square().sum(), [x32, *params])
    torch.testing.assert_close(y.float(), y32, rtol=0.05, atol=0.05)  # bf16 keeps ~3 significant digits
    for got, ref in zip(grads, want):
        cosine = torch.nn.functional.cosine_similarity(got.float().flatten(), ref.flatten(), dim=0)
        assert cosine > 0.999, cosine
