"""MetaMixer instances equal their classic formulations numerically (paper App. B)."""
import torch
import torch.nn.functional as F
from torch import nn

from metamixer.nn.blocks import FFNifiedAttention
from metamixer.nn.framework import (
    MetaMixer,
    convnext_block,
    ffn,
    ffnified_attention,
    self_attention,
    spatial_mlp,
)

torch.manual_seed(0)


def test_self_attention_instance_equals_softmax_qkt_v():
    m = self_attention(24, num_heads=1, out_proj=False).eval()
    x = torch.randn(3, 10, 24)
    q = m.query_proj(x)
    k, v = m.key_value.key(x), m.key_value.value(x)
    expected = torch.softmax(q @ k.transpose(1, 2) / 24**0.5, dim=-1) @ v
    torch.testing.assert_close(m(x), expected)
    # coefficients are attention probabilities: rows sum to one
    torch.testing.assert_close(m.coefficients(x).sum(-1), torch.ones(3, 1, 10))


def test_multihead_self_attention_instance_equals_sdpa():
    m = self_attention(32, num_heads=4).eval()
    x = torch.randn(2, 7, 32)
    q, (k, v) = m.query_proj(x), m.key_value(x)

    def heads(t):
        return t.reshape(2, 7, 4, 8).transpose(1, 2)

    y = F.scaled_dot_product_attention(heads(q), heads(k), heads(v)).transpose(1, 2).reshape(2, 7, 32)
    torch.testing.assert_close(m(x), m.out_proj(y), atol=1e-5, rtol=1e-5)


def test_ffn_instance_equals_linear_gelu_linear():
    m = ffn(16, 48)
    ref = nn.Sequential(nn.Linear(16, 48), nn.GELU(), nn.Linear(48, 16))
    with torch.no_grad():
        ref[0].weight.copy_(m.key_value.key)
        ref[0].bias.copy_(m.key_value.key_bias.uniform_(-1, 1))
        ref[2].weight.copy_(m.key_value.value)
        ref[2].bias.copy_(m.key_value.value_bias.uniform_(-1, 1))
    x = torch.randn(4, 5, 16)
    torch.testing.assert_close(m(x), ref(x))


def test_spatial_mlp_instance_mixes_tokens():
    m = spatial_mlp(num_tokens=9, hidden=20)
    x = torch.randn(2, 9, 6)
    kv = m.key_value
    expected = F.linear(F.gelu(F.linear(x.transpose(1, 2), kv.key, kv.key_bias)), kv.value, kv.value_bias).transpose(1, 2)
    torch.testing.assert_close(m(x), expected)
    # mixing is along tokens: permuting channels permutes outputs the same way
    perm = torch.randperm(6)
    torch.testing.assert_close(m(x[..., perm]), m(x)[..., perm])


def test_convnext_block_instance_equals_dw_ln_mlp():
    m = convnext_block(8, 7, expansion=4).eval()
    dw, ln = m.query_proj[0], m.query_proj[1]
    kv = m.key_value
    x = torch.randn(2, 8, 9, 9)
    h = F.layer_norm(dw(x).permute(0, 2, 3, 1), (8,), ln.weight, ln.bias, eps=1e-6)
    expected = F.linear(F.gelu(F.linear(h, kv.key, kv.key_bias)), kv.value, kv.value_bias).permute(0, 3, 1, 2)
    torch.testing.assert_close(m(x), expected, atol=1e-5, rtol=1e-5)


def test_ffnified_attention_instance_equals_block():
    m = ffnified_attention(8, 5).eval()
    blk = FFNifiedAttention(8, 5, fc_norm=False).eval()
    blk.fc.load_state_dict(m.query_proj.state_dict())
    blk.conv1.load_state_dict(m.key_value.key.state_dict())
    blk.conv2.load_state_dict(m.key_value.value.state_dict())
    x = torch.randn(2, 8, 10, 10)
    torch.testing.assert_close(m(x), blk(x))


def test_swapping_one_suboperation():
    """FFNification in miniature: attention with GELU instead of softmax is still a valid MetaMixer."""
    att = self_attention(8, out_proj=False)
    gelu_att = MetaMixer(att.query_proj, att.key_value, att.compatibility, nn.GELU(), att.aggregation)
    x = torch.randn(1, 5, 8)
    assert gelu_att(x).shape == x.shape
    assert not torch.allclose(gelu_att(x), att(x))
