"""FFNet blocks: shapes, residual semantics, LayerScale/DropPath behaviour, hybrid attention."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from metamixer.nn.blocks import (
    ConvFFN,
    FFNetBlock,
    FFNifiedAttention,
    HybridAttentionBlock,
    MultiHeadSelfAttention,
    Residual,
    ffnet_block,
)
from metamixer.nn.layers import DropPath, LayerNormChannelsFirst, LayerScale, drop_path, linear_ramp
from metamixer.nn.reparam import reparameterize


def test_ffnified_attention_is_fc_dw_gelu_dw():
    m = FFNifiedAttention(8, 5, fc_norm=False).eval()
    x = torch.randn(2, 8, 11, 11)
    y = F.conv2d(x, m.fc.weight, m.fc.bias)
    y = F.conv2d(y, m.conv1.weight, m.conv1.bias, padding=2, groups=8)
    y = F.conv2d(F.gelu(y), m.conv2.weight, m.conv2.bias, padding=2, groups=8)
    torch.testing.assert_close(m(x), y)


def test_convffn_is_dw_expand_gelu_project_1d():
    m = ConvFFN(6, 7, expansion=2, ndim=1, dw_norm=False).eval()
    x = torch.randn(3, 6, 20)
    y = F.conv1d(x, m.conv.weight, m.conv.bias, padding=3, groups=6)
    y = F.conv1d(F.gelu(F.conv1d(y, m.fc1.weight, m.fc1.bias)), m.fc2.weight, m.fc2.bias)
    torch.testing.assert_close(m(x), y)
    assert m.fc1.weight.shape == (12, 6, 1)


@pytest.mark.parametrize("ndim,shape", [(1, (2, 16, 40)), (2, (2, 16, 12, 12))])
def test_block_shapes_and_gradients(ndim, shape):
    b = ffnet_block(16, 7, ndim=ndim, layer_scale_init=1e-6, drop_path=0.2)
    x = torch.randn(*shape, requires_grad=True)
    y = b(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_layer_scale_near_zero_makes_block_near_identity():
    b = ffnet_block(8, 3, layer_scale_init=1e-9).eval()
    x = torch.randn(1, 8, 9, 9)
    assert (b(x) - x).abs().max() < 1e-6


def test_residual_layout_keys():
    r = Residual(nn.Conv2d(4, 4, 1), dim=4, layer_scale_init=1e-6)
    assert set(r.state_dict()) == {"main.weight", "main.bias", "layer_scale"}
    assert r.layer_scale.shape == (4, 1, 1)
    r2 = Residual(nn.Conv2d(4, 4, 1))
    assert set(r2.state_dict()) == {"main.weight", "main.bias"}


def test_residual_block_mode_adds_skips():
    tm, cm = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)
    blk = FFNetBlock(tm, cm, residual=True)
    x = torch.randn(1, 4, 5, 5)
    h = x + tm(x)
    torch.testing.assert_close(blk(x), h + cm(h))


def test_drop_path_statistics_and_eval_identity():
    torch.manual_seed(0)
    x = torch.ones(20000, 3)
    y = drop_path(x, 0.3, training=True)
    kept = (y[:, 0] != 0).float().mean().item()
    assert abs(kept - 0.7) < 0.02
    assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / 0.7))
    dp = DropPath(0.5).eval()
    assert torch.equal(dp(x), x)


def test_layer_norm_channels_first_matches_layernorm():
    ln = LayerNormChannelsFirst(6)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-1, 1)
    ref = nn.LayerNorm(6, eps=1e-6)
    ref.load_state_dict(ln.state_dict())
    x = torch.randn(2, 6, 5, 7)
    torch.testing.assert_close(ln(x), ref(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), atol=1e-5, rtol=1e-5)
    ls = LayerScale(6, 0.1)
    torch.testing.assert_close(ls(x), x * 0.1)


def test_linear_ramp():
    assert linear_ramp(5, 0.4) == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])
    assert linear_ramp(1, 0.4) == [0.0]


def test_multihead_attention_matches_reference():
    torch.manual_seed(0)
    mha = MultiHeadSelfAttention(16, num_heads=4).eval()
    ref = nn.MultiheadAttention(16, 4, batch_first=True).eval()
    with torch.no_grad():
        ref.in_proj_weight.copy_(mha.qkv.weight)
        ref.in_proj_bias.copy_(mha.qkv.bias)
        ref.out_proj.weight.copy_(mha.proj.weight)
        ref.out_proj.bias.copy_(mha.proj.bias)
    x = torch.randn(2, 16, 4, 5)
    tokens = x.flatten(2).transpose(1, 2)
    expected = ref(tokens, tokens, tokens, need_weights=False)[0].transpose(1, 2).reshape(x.shape)
    torch.testing.assert_close(mha(x), expected, atol=1e-5, rtol=1e-5)


def test_hybrid_block_runs_and_fuses():
    b = HybridAttentionBlock(16, num_heads=4, mlp_kernel_size=3).eval()
    x = torch.randn(2, 16, 6, 6)
    y = b(x)
    assert y.shape == x.shape
    torch.testing.assert_close(reparameterize(b)(x), y)
