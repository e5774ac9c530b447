"""metamixer.nn.sparse: spconv wrappers checked against dense conv3d references, the sparse FFNet block against a
dense re-implementation, the CPU patches (stream, Native algo, thread race) and the missing-spconv error."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # spconv's CPU build is only tested single-OMP-threaded

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

import metamixer.nn.sparse as ms
from metamixer.train.errors import FFNetError

HAS_SPCONV = ms.spconv_available()
needs_spconv = pytest.mark.skipif(
    not HAS_SPCONV, reason="spconv not installed (pip install metamixer[sparse])"
)


def _random_sites(n: int, size: int, batch: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(batch):
        xyz = torch.unique(torch.randint(0, size, (n, 3), generator=g), dim=0)
        rows.append(torch.cat([torch.full((len(xyz), 1), b), xyz], 1))
    return torch.cat(rows).int()


def _to_dense(feat: torch.Tensor, idx: torch.Tensor, size: int, batch: int) -> torch.Tensor:
    """Scatter [N, C] features into a dense [B, C, S, S, S] volume (differentiable)."""
    i = idx.long()
    vol = feat.new_zeros(batch, size, size, size, feat.shape[1])
    vol = vol.index_put((i[:, 0], i[:, 1], i[:, 2], i[:, 3]), feat)
    return vol.permute(0, 4, 1, 2, 3)


def _gather(vol: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    i = idx.long()
    return vol.permute(0, 2, 3, 4, 1)[i[:, 0], i[:, 1], i[:, 2], i[:, 3]]


def _dense_weight(conv: torch.nn.Module) -> torch.Tensor:
    """spconv weight [out, k, k, k, in] -> torch conv3d weight [out, in, k, k, k]."""
    return conv.weight.permute(0, 4, 1, 2, 3)


def test_require_spconv_missing_gives_install_hint() -> None:
    """Run in a fresh interpreter with spconv import blocked: one FFNetError naming the extra to install."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["spconv"] = None
        sys.modules["spconv.pytorch"] = None
        import metamixer.nn.sparse as ms
        from metamixer.train.errors import FFNetError
        assert ms.spconv_available() is False
        for get in (ms.require_spconv, lambda: ms.SubMConv3d, lambda: ms.SparseFFNetBlock(8)):
            try:
                get()
            except FFNetError as exc:
                assert "pip install metamixer[sparse]" in str(exc) and "sparse-cu12" in str(exc), exc
            else:
                raise AssertionError("no FFNetError")
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@needs_spconv
@pytest.mark.parametrize("threads", [1, 2])
def test_subm_conv_matches_dense_conv3d_at_active_sites(threads: int) -> None:
    """Forward and both gradients of SubMConv3d equal dense conv3d restricted to the active sites (fp64).

    Run with 2 torch threads as well: unpatched spconv CPU kernels race there and give errors of ~0.3.
    """
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        size, batch = 12, 2
        idx = _random_sites(600, size, batch)
        torch.manual_seed(0)
        conv = ms.SubMConv3d(5, 7, 3, padding=1, bias=True, indice_key="t").double()
        torch.nn.init.normal_(conv.bias)
        x = torch.randn(len(idx), 5, dtype=torch.float64, requires_grad=True)
        y = conv(ms.sparse_tensor(x, idx, spatial_shape=(size,) * 3, batch_size=batch)).features
        xd = x.detach().clone().requires_grad_(True)
        w = _dense_weight(conv).detach().clone().requires_grad_(True)
        ref = _gather(F.conv3d(_to_dense(xd, idx, size, batch), w, conv.bias, padding=1), idx)
        assert y.shape == (len(idx), 7)
        torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)
        g = torch.randn_like(y)
        (y * g).sum().backward()
        (ref * g).sum().backward()
        torch.testing.assert_close(x.grad, xd.grad, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(conv.weight.grad.permute(0, 4, 1, 2, 3), w.grad)
        assert torch.get_num_threads() == threads  # the single-thread guard restores the caller's setting
    finally:
        torch.set_num_threads(old)


@needs_spconv
def test_strided_and_inverse_conv_match_dense() -> None:
    """SparseConv3d(k2, s2) equals dense conv3d at its output sites; SparseInverseConv3d returns the input sites
    and equals the dense transposed conv there."""
    size, batch = 8, 1
    idx = _random_sites(120, size, batch, seed=3)
    torch.manual_seed(1)
    down = ms.SparseConv3d(4, 6, 2, stride=2, bias=False, indice_key="down").double()
    up = ms.SparseInverseConv3d(6, 3, 2, bias=False, indice_key="down").double()
    x = torch.randn(len(idx), 4, dtype=torch.float64)
    st = ms.sparse_tensor(x, idx, spatial_shape=(size,) * 3, batch_size=batch)
    y = down(st)
    # expected output sites: every occupied 2x2x2 cell
    cells = torch.unique(torch.cat([idx[:, :1], idx[:, 1:] // 2], 1), dim=0)

    def key(i: torch.Tensor) -> torch.Tensor:
        return ((i[:, 0].long() * 64 + i[:, 1]) * 64 + i[:, 2]) * 64 + i[:, 3]

    assert torch.equal(key(y.indices).sort().values, key(cells).sort().values)
    ref = _gather(F.conv3d(_to_dense(x, idx, size, batch), _dense_weight(down), stride=2), y.indices)
    torch.testing.assert_close(y.features, ref, rtol=1e-10, atol=1e-10)
    z = up(y)
    assert torch.equal(z.indices, st.indices)
    coarse = _to_dense(y.features, y.indices, size // 2, batch)
    ref_up = F.conv_transpose3d(coarse, _dense_weight(up).transpose(0, 1), stride=2)
    torch.testing.assert_close(z.features, _gather(ref_up, idx), rtol=1e-10, atol=1e-10)


def _dense_block_reference(
    block: ms.SparseFFNetBlock, x: torch.Tensor, idx: torch.Tensor, size: int, batch: int
):
    """The FFNet block written with dense conv3d + gathers: an independent re-implementation to compare with."""

    def subm(conv, feat):
        return _gather(
            F.conv3d(_to_dense(feat, idx, size, batch), _dense_weight(conv), conv.bias, padding=1), idx
        )

    def bn(m, f):
        return F.batch_norm(f, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps)

    h = F.linear(
        F.layer_norm(x, (x.shape[1],), block.norm1.weight, block.norm1.bias), block.fc.weight, block.fc.bias
    )
    h = bn(block.bn2, subm(block.conv2, F.gelu(bn(block.bn1, subm(block.conv1, h)))))
    x = x + h
    h = bn(block.bn3, subm(block.conv3, F.layer_norm(x, (x.shape[1],), block.norm2.weight, block.norm2.bias)))
    h = F.linear(
        F.gelu(F.linear(h, block.mlp.fc1.weight, block.mlp.fc1.bias)),
        block.mlp.fc2.weight,
        block.mlp.fc2.bias,
    )
    return x + h


@needs_spconv
def test_sparse_ffnet_block_matches_dense_reference_and_official_layout() -> None:
    size, batch, dim = 10, 2, 8
    idx = _random_sites(300, size, batch, seed=5)
    torch.manual_seed(2)
    block = ms.SparseFFNetBlock(dim, expansion=4, drop_path=0.1, indice_key="s0").double()
    ms.init_sparse_weights(block)
    # non-trivial BN statistics so that a missing/misplaced BN would show
    for bn in (block.bn1, block.bn2, block.bn3):
        assert bn.eps == 1e-3 and bn.momentum == 0.01
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.normal_()
    block.eval()
    x = torch.randn(len(idx), dim, dtype=torch.float64)
    out = block(ms.sparse_tensor(x, idx, batch_size=batch))
    torch.testing.assert_close(
        out.features, _dense_block_reference(block, x, idx, size, batch), rtol=1e-9, atol=1e-9
    )
    # parameter count: 3 SubM k3 (27C^2 + C each) + Linear C->C + LN x2 + BN x3 + FFN x4
    c = dim
    expected = (
        3 * (27 * c * c + c) + (c * c + c) + 2 * 2 * c + 3 * 2 * c + (c * 4 * c + 4 * c) + (4 * c * c + c)
    )
    assert sum(p.numel() for p in block.parameters()) == expected
    assert block.conv1.weight.shape == (c, 3, 3, 3, c)
    # drop-path is active in training mode (outputs differ between two passes) and the block trains
    block.train()
    st = ms.sparse_tensor(x.requires_grad_(True), idx, batch_size=batch)
    a = block(st).features
    a.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert block.conv1.weight.grad is not None and block.conv1.weight.grad.abs().sum() > 0


@needs_spconv
def test_sparse_tensor_validation() -> None:
    feat = torch.randn(3, 2)
    with pytest.raises(FFNetError, match="indices"):
        ms.sparse_tensor(feat, torch.zeros(3, 3, dtype=torch.int32))
    with pytest.raises(FFNetError, match="3 feature rows but 2"):
        ms.sparse_tensor(feat, torch.zeros(2, 4, dtype=torch.int32))
    with pytest.raises(FFNetError, match="non-negative"):
        ms.sparse_tensor(feat, torch.tensor([[0, -1, 0, 0], [0, 0, 0, 0], [0, 1, 1, 1]]))
    st = ms.sparse_tensor(feat, torch.tensor([[0, 1, 2, 3], [1, 0, 0, 0], [0, 4, 0, 0]]), pad=2)
    assert list(st.spatial_shape) == [7, 5, 6] and st.batch_size == 2 and st.indices.dtype == torch.int32


def test_activation_name_is_checked() -> None:
    if not HAS_SPCONV:
        pytest.skip("spconv not installed")
    with pytest.raises(FFNetError, match="gelu"):
        ms.SparseFFNetBlock(8, act="swish")
