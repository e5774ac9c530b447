"""The channels-last inference kernels and the deploy path against PyTorch: every fused op and every fast block
must equal the plain ops on ragged shapes, with the kernels and without them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metamixer.kernels import native
from metamixer.kernels.nhwc import PackedPointwise, depthwise, mlp, nhwc_kernels, pointwise
from metamixer.nn.blocks import ConvFFN, FFNetBlock, FFNifiedAttention, Residual
from metamixer.nn.inference import FastFFNetBlock2d, fast_block_count, prepare_for_inference

KERNELS = nhwc_kernels()
needs_kernels = pytest.mark.skipif(KERNELS is None, reason="no C compiler / native kernels disabled here")


def _cl(*shape: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g).contiguous(memory_format=torch.channels_last)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@needs_kernels
def test_build_reports_a_vector_width_that_matches_the_cpu() -> None:
    flags = open("/proc/cpuinfo").read() if native.os.path.exists("/proc/cpuinfo") else ""
    expected = 16 if " avx512f" in flags else 8 if " avx" in flags else 4
    assert KERNELS.vector_width == expected


@needs_kernels
@pytest.mark.parametrize("batch,h,w", [(1, 5, 7), (2, 9, 4), (1, 1, 1), (3, 17, 13)])
@pytest.mark.parametrize("act", [None, "gelu"])
def test_pointwise_equals_conv(batch: int, h: int, w: int, act: str | None) -> None:
    vw = KERNELS.vector_width
    for k, n in ((2 * vw, 3 * vw), (5, 4 * vw), (3 * vw + 1, vw)):  # K need not be a multiple of the width
        x, res = _cl(batch, k, h, w), _cl(batch, n, h, w, seed=1)
        weight, bias = _cl(n, k, 1, 1, seed=2), torch.randn(n)
        conv = PackedPointwise.from_conv(weight, bias)
        got = pointwise(x, conv, act, res)
        ref = F.conv2d(x, weight, bias)
        ref = (F.gelu(ref) if act else ref) + res
        assert got.is_contiguous(memory_format=torch.channels_last)
        assert _rel(got, ref) < 1e-5


@needs_kernels
@pytest.mark.parametrize("pixels", [(1, 1), (3, 5), (8, 8), (11, 23)])
def test_mlp_equals_two_convs_with_gelu(pixels: tuple[int, int]) -> None:
    vw = KERNELS.vector_width
    for c, hidden in ((vw, 3 * vw), (6 * vw, 12 * vw), (5 * vw, 15 * vw)):
        x, res = _cl(2, c, *pixels), _cl(2, c, *pixels, seed=3)
        w1, b1 = _cl(hidden, c, 1, 1, seed=4) * 0.3, torch.randn(hidden)
        w2, b2 = _cl(c, hidden, 1, 1, seed=5) * 0.3, torch.randn(c)
        got = mlp(x, PackedPointwise.from_conv(w1, b1), PackedPointwise.from_conv(w2, b2), res)
        ref = F.conv2d(F.gelu(F.conv2d(x, w1, b1)), w2, b2) + res
        assert _rel(got, ref) < 1e-5


@needs_kernels
@pytest.mark.parametrize("kernel", [(1, 1), (3, 3), (5, 5), (7, 7), (3, 5), (9, 1)])
@pytest.mark.parametrize("channels", [8, 16, 21, 96])
def test_depthwise_equals_conv(kernel: tuple[int, int], channels: int) -> None:
    for h, w in ((6, 9), (2, 2), (13, 4)):
        x, res = _cl(2, channels, h, w), _cl(2, channels, h, w, seed=6)
        weight, bias = torch.randn(channels, 1, *kernel), torch.randn(channels)
        ref = F.conv2d(x, weight, bias, padding=(kernel[0] // 2, kernel[1] // 2), groups=channels)
        assert _rel(depthwise(x, weight, bias, act="gelu"), F.gelu(ref)) < 1e-5
        assert _rel(depthwise(x, weight, bias, residual=res), ref + res) < 1e-5


@needs_kernels
def test_out_buffers_are_reused_only_where_that_is_safe() -> None:
    """``out=``: the FFN may overwrite its own input (a chunk is read whole first); a depthwise conv or a 1x1 conv
    never writes into a tensor it reads (they get a fresh buffer instead); a free buffer of the right shape is
    used as is. Results equal PyTorch's in every case."""
    vw = KERNELS.vector_width
    c, hidden = 2 * vw, 4 * vw
    x, res = _cl(2, c, 7, 9), _cl(2, c, 7, 9, seed=7)
    w1, b1 = _cl(hidden, c, 1, 1, seed=8) * 0.3, torch.randn(hidden)
    w2, b2 = _cl(c, hidden, 1, 1, seed=9) * 0.3, torch.randn(c)
    ref = F.conv2d(F.gelu(F.conv2d(x, w1, b1)), w2, b2) + res
    inplace = x.clone()
    got = mlp(inplace, PackedPointwise.from_conv(w1, b1), PackedPointwise.from_conv(w2, b2), res, out=inplace)
    assert got.data_ptr() == inplace.data_ptr() and _rel(got, ref) < 1e-5
    onto_residual = res.clone()
    got = mlp(x, PackedPointwise.from_conv(w1, b1), PackedPointwise.from_conv(w2, b2), onto_residual,
              out=onto_residual)
    assert got.data_ptr() != onto_residual.data_ptr() and _rel(got, ref) < 1e-5
    wd, bd = torch.randn(c, 1, 3, 3), torch.randn(c)
    dw_ref = F.conv2d(x, wd, bd, padding=1, groups=c) + res
    got = depthwise(x, wd, bd, residual=res, out=x)
    assert got.data_ptr() != x.data_ptr() and _rel(got, dw_ref) < 1e-5
    free = torch.empty_like(x)
    got = depthwise(x, wd, bd, residual=res, out=free)
    assert got.data_ptr() == free.data_ptr() and _rel(got, dw_ref) < 1e-5
    conv = PackedPointwise.from_conv(_cl(c, c, 1, 1, seed=10), torch.randn(c))
    pw_ref = F.conv2d(x, conv.weight, conv.bias)
    got = pointwise(x, conv, out=x)
    assert got.data_ptr() != x.data_ptr() and _rel(got, pw_ref) < 1e-5
    wrong_shape = torch.empty(2, c, 7, 8).contiguous(memory_format=torch.channels_last)
    assert depthwise(x, wd, bd, out=wrong_shape).shape == x.shape


@needs_kernels
def test_openmp_team_and_thread_pool_give_the_same_results() -> None:
    """Where the build shares PyTorch's OpenMP runtime the kernels split work on its team (the *_parallel
    entries), else (or in a forked child) in a Python pool; both splits compute the same values."""
    vw = KERNELS.vector_width
    c, hidden = 3 * vw, 6 * vw
    x, res = _cl(2, c, 23, 17), _cl(2, c, 23, 17, seed=11)
    conv = PackedPointwise.from_conv(_cl(c, c, 1, 1, seed=12), torch.randn(c))
    fc1 = PackedPointwise.from_conv(_cl(hidden, c, 1, 1, seed=13) * 0.3, torch.randn(hidden))
    fc2 = PackedPointwise.from_conv(_cl(c, hidden, 1, 1, seed=14) * 0.3, torch.randn(c))
    wd, bd = torch.randn(c, 1, 7, 7), torch.randn(c)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    shared = KERNELS._pixels.shared, KERNELS._rows.shared
    try:
        results = []
        for team in (True, False):
            KERNELS._pixels.shared = KERNELS._rows.shared = team and shared[0]
            results.append((pointwise(x, conv, "gelu", res), mlp(x, fc1, fc2, res),
                            depthwise(x, wd, bd, act="gelu", residual=res)))
    finally:
        KERNELS._pixels.shared, KERNELS._rows.shared = shared
        torch.set_num_threads(threads)
    for on_team, in_pool in zip(*results):
        assert torch.equal(on_team, in_pool)
    assert _rel(results[0][2], F.gelu(F.conv2d(x, wd, bd, padding=3, groups=c)) + res) < 1e-5


@needs_kernels
def test_chain_reuses_its_buffers_and_never_writes_a_callers_tensor() -> None:
    """A FastFFNetChain writes each block's result into the buffer the block before it read: outputs equal the
    fused blocks' (also on repeated calls), the caller's input is untouched, and one call makes three buffers
    however many blocks there are (each output is one of them)."""
    from metamixer.nn.inference import FastFFNetChain

    torch.manual_seed(0)
    model = nn.Sequential(*[_sr_block(32) for _ in range(5)]).eval()
    fast = prepare_for_inference(model)
    assert isinstance(fast, FastFFNetChain) and fast_block_count(fast) == 5
    x = _cl(1, 32, 13, 11)
    before = x.clone()
    storages: list[int] = []
    hooks = [b.register_forward_hook(lambda m, i, o: storages.append(o.untyped_storage().data_ptr()))
             for b in fast]
    with torch.no_grad():
        ref = model(x)
        y1 = fast(x)
        outputs_first_call = list(storages)
        y2 = fast(x)
    for h in hooks:
        h.remove()
    assert torch.equal(x, before)
    assert _rel(y1, ref) < 1e-4 and torch.equal(y1, y2)
    assert x.untyped_storage().data_ptr() not in outputs_first_call
    assert len(set(outputs_first_call)) == 2  # ping-pong between two buffers (the third is the scratch)
    assert outputs_first_call[0] == outputs_first_call[2] == outputs_first_call[4]
    assert y1.untyped_storage().data_ptr() != y2.untyped_storage().data_ptr()  # nothing kept across calls


def test_ops_take_the_pytorch_path_for_other_inputs() -> None:
    """bf16, contiguous NCHW inputs that need grad, and disabled kernels all give PyTorch's result."""
    x = _cl(1, 16, 4, 5).requires_grad_()
    weight, bias = torch.randn(32, 16, 1, 1), torch.randn(32)
    conv = PackedPointwise.from_conv(weight, bias)
    y = pointwise(x, conv, "gelu")
    y.sum().backward()  # autograd recorded: the PyTorch path, so there is a gradient
    assert x.grad is not None and x.grad.abs().sum() > 0
    with torch.no_grad(), native.disabled():
        assert _rel(pointwise(x, conv, "gelu"), F.gelu(F.conv2d(x, weight, bias))) < 1e-6
    xb = x.detach().bfloat16()
    got = pointwise(xb, PackedPointwise(weight.bfloat16(), bias.bfloat16(), conv.packed))
    assert got.dtype == torch.bfloat16


def _sr_block(dim: int = 32) -> FFNetBlock:
    names = ("0", "1", "2", "3")
    token = FFNifiedAttention(dim, 3, rep_kernels=None, fc_norm=False, names=names)
    channel = ConvFFN(dim, 3, 2.0, rep_kernels=None, dw_norm=False, names=names)
    return FFNetBlock(token, channel, residual=True)


def _image_block(dim: int = 48) -> FFNetBlock:
    """The image-FFNet layout: BN'd convs, re-param branches, LayerScale, DropPath (fused before use)."""
    token = nn.Sequential(Residual(FFNifiedAttention(dim, 7, rep_kernels=(3,)), dim, 1e-1, drop_path=0.1),
                          nn.Identity())
    channel = Residual(ConvFFN(dim, 3, 3.0, rep_kernels=(1,)), dim, 1e-1, drop_path=0.1)
    block = FFNetBlock(token, channel)
    with torch.no_grad():  # non-trivial BN statistics and LayerScales
        for m in block.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.normal_(1, 0.2)
                m.bias.normal_(0, 0.2)
            if isinstance(m, Residual):
                m.layer_scale.normal_(0.5, 0.3)
    return block


@pytest.mark.parametrize("make,size", [(_sr_block, (2, 32, 11, 9)), (_image_block, (2, 48, 14, 14))])
@pytest.mark.parametrize("kernels_on", [True, False])
def test_fast_block_equals_the_fused_block(make, size, kernels_on: bool) -> None:  # noqa: ANN001
    torch.manual_seed(0)
    model = nn.Sequential(make(), make()).eval()
    x = torch.randn(*size)
    with torch.no_grad():
        reference = model(x)
        if kernels_on:
            fast = prepare_for_inference(model)
            got = fast(x)
        else:
            with native.disabled():
                fast = prepare_for_inference(model)
                got = fast(x)
    assert fast_block_count(fast) == 2
    assert _rel(got, reference) < 1e-4


def test_prepare_never_aliases_or_changes_the_training_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(_image_block(), _image_block()).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = prepare_for_inference(model)
    assert model.training and fast_block_count(model) == 0  # the original is untouched
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    pointers = {t.data_ptr() for t in model.state_dict().values()}
    assert not pointers & {t.data_ptr() for t in list(fast.parameters()) + list(fast.buffers())}
    x = torch.randn(1, 48, 8, 8)
    with torch.no_grad():
        first = fast(x)
        for p in model.parameters():
            p.add_(1.0)
        assert torch.equal(fast(x), first)


def test_blocks_of_other_layouts_stay_as_they_are() -> None:
    block = _sr_block().eval()
    block.token_mixer[2] = nn.GELU(approximate="tanh")  # not the exact GELU the kernels compute
    assert FastFFNetBlock2d.from_block(block) is None
    assert FastFFNetBlock2d.from_block(_sr_block().train()) is None
    normed = _image_block().eval()
    normed.channel_mixer.norm = nn.BatchNorm2d(48)  # a pre-norm the fused form cannot absorb
    assert FastFFNetBlock2d.from_block(normed) is None
