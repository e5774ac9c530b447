"""The channels-last inference kernels and the deploy path against PyTorch: every fused op and every fast block
must equal the plain ops on ragged shapes, with the kernels and without them."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metamixer.kernels import native
from metamixer.kernels.nhwc import (Depthwise, PackedPointwise, depthwise, depthwise_gelu_depthwise, depthwise_mlp,
                                    mlp, nhwc_kernels, pointwise)
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


# Ragged shapes for the fused row kernels: one row, one or two columns (the border-only paths), widths below and
# above the 32-pixel chunk and not a multiple of it, batches > 1 (rows of one image never see another's).
FUSED_SHAPES = [(1, 1, 1), (2, 1, 5), (1, 4, 2), (3, 5, 3), (2, 7, 33), (1, 9, 70)]


def _dw3(c: int, seed: int) -> Depthwise:
    g = torch.Generator().manual_seed(seed)
    return Depthwise.from_conv(torch.randn(c, 1, 3, 3, generator=g) * 0.5, torch.randn(c, generator=g))


@needs_kernels
@pytest.mark.parametrize("batch,h,w", FUSED_SHAPES)
@pytest.mark.parametrize("with_residual", [True, False])
def test_fused_depthwise_pair_equals_two_convs_with_gelu(batch: int, h: int, w: int, with_residual: bool) -> None:
    for c in (KERNELS.vector_width, 3 * KERNELS.vector_width):
        u, res = _cl(batch, c, h, w, seed=20), _cl(batch, c, h, w, seed=21)
        first, second = _dw3(c, 22), _dw3(c, 23)
        residual = res if with_residual else None
        ref = F.conv2d(F.gelu(F.conv2d(u, first.weight, first.bias, padding=1, groups=c)),
                       second.weight, second.bias, padding=1, groups=c)
        ref = ref + res if with_residual else ref
        got = depthwise_gelu_depthwise(u, first, second, residual)
        assert got.is_contiguous(memory_format=torch.channels_last)
        assert _rel(got, ref) < 1e-5


@needs_kernels
@pytest.mark.parametrize("batch,h,w", FUSED_SHAPES)
def test_fused_depthwise_ffn_equals_conv_then_ffn_with_residual(batch: int, h: int, w: int) -> None:
    vw = KERNELS.vector_width
    for c, hidden in ((vw, 2 * vw), (3 * vw, 6 * vw)):
        t = _cl(batch, c, h, w, seed=24)
        dw = _dw3(c, 25)
        fc1 = PackedPointwise.from_conv(_cl(hidden, c, 1, 1, seed=26) * 0.3, torch.randn(hidden))
        fc2 = PackedPointwise.from_conv(_cl(c, hidden, 1, 1, seed=27) * 0.3, torch.randn(c))
        ref = t + F.conv2d(F.gelu(F.conv2d(F.conv2d(t, dw.weight, dw.bias, padding=1, groups=c),
                                           fc1.weight, fc1.bias)), fc2.weight, fc2.bias)
        got = depthwise_mlp(t, dw, fc1, fc2)
        assert got.is_contiguous(memory_format=torch.channels_last)
        assert _rel(got, ref) < 1e-5


@needs_kernels
def test_fused_kernels_never_write_a_tensor_they_read() -> None:
    """The depthwise pair reads u and the residual after writing rows of its output, the ConvFFN reads t's
    neighbouring rows: an ``out`` that overlaps any of them is replaced by a fresh buffer; a free one is used."""
    c, hidden = 2 * KERNELS.vector_width, 4 * KERNELS.vector_width
    u, res = _cl(1, c, 6, 10, seed=28), _cl(1, c, 6, 10, seed=29)
    first, second, dw = _dw3(c, 30), _dw3(c, 31), _dw3(c, 32)
    fc1 = PackedPointwise.from_conv(_cl(hidden, c, 1, 1, seed=33) * 0.3, torch.randn(hidden))
    fc2 = PackedPointwise.from_conv(_cl(c, hidden, 1, 1, seed=34) * 0.3, torch.randn(c))
    pair_ref, ffn_ref = depthwise_gelu_depthwise(u, first, second, res), depthwise_mlp(u, dw, fc1, fc2)
    for taken in (u, res):
        before = taken.clone()
        got = depthwise_gelu_depthwise(u, first, second, res, out=taken)
        assert got.data_ptr() != taken.data_ptr() and torch.equal(got, pair_ref) and torch.equal(taken, before)
    got = depthwise_mlp(u, dw, fc1, fc2, out=u)
    assert got.data_ptr() != u.data_ptr() and torch.equal(got, ffn_ref)
    free = torch.empty_like(u)
    assert depthwise_gelu_depthwise(u, first, second, res, out=free).data_ptr() == free.data_ptr()
    assert depthwise_mlp(u, dw, fc1, fc2, out=free).data_ptr() == free.data_ptr()


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
    dw_a, dw_b = _dw3(c, 35), _dw3(c, 36)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    shared = KERNELS._pixels.shared, KERNELS._rows.shared
    try:
        results = []
        for team in (True, False):
            KERNELS._pixels.shared = KERNELS._rows.shared = team and shared[0]
            results.append((pointwise(x, conv, "gelu", res), mlp(x, fc1, fc2, res),
                            depthwise(x, wd, bd, act="gelu", residual=res),
                            depthwise_gelu_depthwise(x, dw_a, dw_b, res), depthwise_mlp(x, dw_a, fc1, fc2)))
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


@pytest.mark.parametrize("case", ["disabled", "5x5", "odd_channels", "grad"])
def test_fused_ops_fall_back_to_the_plain_ops(case: str) -> None:
    """Where the row kernels cannot run (kernels off, a kernel size other than 3x3, channels that are not a
    multiple of the vector width, autograd) the fused ops compute the same thing with the unfused ops."""
    c = 21 if case == "odd_channels" else 16
    size = 5 if case == "5x5" else 3
    g = torch.Generator().manual_seed(40)
    first, second, dw = (Depthwise.from_conv(torch.randn(c, 1, size, size, generator=g) * 0.3,
                                             torch.randn(c, generator=g)) for _ in range(3))
    fc1 = PackedPointwise.from_conv(torch.randn(2 * c, c, 1, 1, generator=g) * 0.3, torch.randn(2 * c, generator=g))
    fc2 = PackedPointwise.from_conv(torch.randn(c, 2 * c, 1, 1, generator=g) * 0.3, torch.randn(c, generator=g))
    u, res = _cl(2, c, 6, 7, seed=41), _cl(2, c, 6, 7, seed=42)
    p = size // 2
    pair_ref = F.conv2d(F.gelu(F.conv2d(u, first.weight, first.bias, padding=p, groups=c)),
                        second.weight, second.bias, padding=p, groups=c) + res
    ffn_ref = u + F.conv2d(F.gelu(F.conv2d(F.conv2d(u, dw.weight, dw.bias, padding=p, groups=c),
                                           fc1.weight, fc1.bias)), fc2.weight, fc2.bias)
    if case == "grad":
        u.requires_grad_()
        pair, ffn = depthwise_gelu_depthwise(u, first, second, res), depthwise_mlp(u, dw, fc1, fc2)
        (pair.sum() + ffn.sum()).backward()
        assert u.grad is not None and u.grad.abs().sum() > 0
    else:
        with torch.no_grad(), native.disabled() if case == "disabled" else torch.no_grad():
            pair, ffn = depthwise_gelu_depthwise(u, first, second, res), depthwise_mlp(u, dw, fc1, fc2)
    assert _rel(pair.detach(), pair_ref) < 1e-5 and _rel(ffn.detach(), ffn_ref) < 1e-5


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
