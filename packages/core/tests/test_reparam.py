"""Structural re-parameterization: fused == unfused (eval), idempotent, no aliasing, nothing left to fuse."""
import copy

import pytest
import torch
from torch import nn

from metamixer.nn.blocks import ConvFFN, FFNifiedAttention, ffnet_block
from metamixer.nn.reparam import (
    BNConv,
    ConvBN,
    RepDWConv,
    ResidualConv1x1,
    count_fusable,
    reparameterize,
)

torch.manual_seed(0)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def no_bn_left(model: nn.Module) -> bool:
    bad = (nn.modules.batchnorm._BatchNorm, ConvBN, BNConv, RepDWConv, ResidualConv1x1)
    return not any(isinstance(m, bad) for m in model.modules())


CASES = [
    ("convbn-2d", lambda: ConvBN(8, 16, 3, stride=2), (2, 8, 15, 15)),
    ("convbn-1d", lambda: ConvBN(8, 16, 5, ndim=1), (2, 8, 40)),
    ("bnconv-2d", lambda: BNConv(8, 12), (2, 8, 9, 9)),
    ("res1x1-2d", lambda: ResidualConv1x1(8), (2, 8, 9, 9)),
    ("res1x1-1d", lambda: ResidualConv1x1(8, ndim=1), (2, 8, 33)),
    ("repdw-7+3", lambda: RepDWConv(8, 7, (3,)), (2, 8, 20, 20)),
    ("repdw-7+3-stride2-mult2", lambda: RepDWConv(8, 7, (3,), stride=2, out_channels=16), (2, 8, 21, 21)),
    ("repdw-9+5+strips", lambda: RepDWConv(8, 9, (5,), strip=True), (2, 8, 20, 20)),
    ("repdw-3+strips", lambda: RepDWConv(8, 3, (), strip=True), (2, 8, 12, 12)),
    ("repdw-1d-51+5", lambda: RepDWConv(8, 51, (5,), ndim=1, names=("lkb_origin", "small_conv"),
                                          conv_bn_names=("conv", "bn")), (2, 8, 48)),
    ("ffnified-2d", lambda: FFNifiedAttention(16, 7, rep_kernels=(3,)), (2, 16, 14, 14)),
    ("ffnified-1d", lambda: FFNifiedAttention(16, 31, ndim=1, rep_kernels=(5,)), (2, 16, 64)),
    ("convffn-2d", lambda: ConvFFN(16, 7, 3, rep_kernels=(3,)), (2, 16, 14, 14)),
    ("convffn-1d", lambda: ConvFFN(16, 9, 2, ndim=1), (2, 16, 30)),
    ("block-2d", lambda: ffnet_block(16, 7, layer_scale_init=0.5), (2, 16, 14, 14)),
    ("block-1d", lambda: ffnet_block(16, 15, ndim=1, layer_scale_init=0.5), (2, 16, 50)),
]


@pytest.mark.parametrize("name,factory,shape", CASES, ids=[c[0] for c in CASES])
def test_fused_matches_unfused(name, factory, shape, bn_randomizer):
    m = bn_randomizer(factory()).eval()
    x = torch.randn(*shape)
    ref = m(x)
    fused = reparameterize(m)
    assert no_bn_left(fused), f"{name}: BN/branch modules remain after reparameterize"
    assert count_fusable(fused) == 0
    assert rel_err(fused(x), ref) <= 1e-5, name


def test_reparameterize_idempotent_and_no_aliasing(bn_randomizer):
    m = bn_randomizer(nn.Sequential(ffnet_block(16, 7, layer_scale_init=1e-2), ffnet_block(16, 3))).eval()
    before = copy.deepcopy(m.state_dict())
    once = reparameterize(m)
    twice = reparameterize(once)
    x = torch.randn(2, 16, 12, 12)
    assert torch.equal(once(x), twice(x))
    assert once.state_dict().keys() == twice.state_dict().keys()
    # the training model is untouched and shares no storage with the fused one
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), k
    train_ptrs = {p.data_ptr() for p in m.parameters()}
    assert not train_ptrs & {p.data_ptr() for p in once.parameters()}
    with torch.no_grad():
        for p in once.parameters():
            p.add_(1.0)
    for k, v in m.state_dict().items():
        assert torch.equal(v, before[k]), f"fused model aliases training weight {k}"
    assert m.training is False and isinstance(m[0].token_mixer[0].main.conv1, RepDWConv)


def test_block_fuse_method_is_out_of_place(bn_randomizer):
    tm = bn_randomizer(FFNifiedAttention(8, 7, rep_kernels=(3,))).eval()
    fused = tm.fuse()
    assert fused is not tm and isinstance(tm.conv1, RepDWConv) and isinstance(fused.conv1, nn.Conv2d)
    x = torch.randn(1, 8, 10, 10)
    assert rel_err(fused(x), tm(x)) <= 1e-5


def test_inplace_reparameterize_replaces_modules(bn_randomizer):
    m = bn_randomizer(nn.Sequential(ConvBN(4, 4, 3), RepDWConv(4, 7))).eval()
    x = torch.randn(1, 4, 9, 9)
    ref = m(x)
    out = reparameterize(m, inplace=True)
    assert out is m and isinstance(m[0], nn.Conv2d) and isinstance(m[1], nn.Conv2d)
    assert rel_err(m(x), ref) <= 1e-5


def test_fused_kernel_math_on_known_weights():
    """A 3x3 branch padded into a 7x7 kernel lands in the centre; BN scale/shift fold as documented."""
    m = RepDWConv(1, 7, (3,)).eval()
    with torch.no_grad():
        for b in m.branches():
            b.conv_module.weight.zero_()
        m.conv1.conv_module.weight[0, 0, 1, 1] = 2.0  # centre tap of the 3x3 branch
        m.conv1.bn_module.running_var.fill_(4.0 - 1e-5)  # std 2 -> scale 0.5
        m.conv1.bn_module.bias.fill_(3.0)
    f = m.fuse()
    assert f.weight.shape == (1, 1, 7, 7)
    assert f.weight[0, 0, 3, 3].item() == pytest.approx(1.0)
    assert f.weight.abs().sum().item() == pytest.approx(1.0)
    assert f.bias.item() == pytest.approx(3.0)


def test_bnconv_rejects_padded_conv():
    from metamixer.nn.reparam import fuse_bn_conv

    with pytest.raises(ValueError, match="unpadded"):
        fuse_bn_conv(nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3, padding=1))


def test_named_children_reproduce_official_keys():
    m = RepDWConv(4, 7, (3,), stride=2, out_channels=8)
    keys = set(m.state_dict())
    assert {"conv.c.weight", "conv.bn.running_var", "conv1.c.weight", "conv1.bn.num_batches_tracked"} <= keys
    assert m.state_dict()["conv.c.weight"].shape == (8, 1, 7, 7)
    r = ResidualConv1x1(8)
    assert set(r.state_dict()) == {"conv.bn.weight", "conv.bn.bias", "conv.bn.running_mean", "conv.bn.running_var",
                                   "conv.bn.num_batches_tracked", "conv.c.weight"}
    sr_like = FFNifiedAttention(6, 3, fc_norm=False, names=("0", "1", "2", "3"))
    assert set(sr_like.state_dict()) == {f"{i}.{p}" for i in (0, 1, 3) for p in ("weight", "bias")}
