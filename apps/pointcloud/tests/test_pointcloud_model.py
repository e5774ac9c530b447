"""Pooling/unpooling against brute force, the model registry, parameter counts vs the analytic formula."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

from metamixer.nn.sparse import spconv_available
from metamixer.train.errors import FFNetError

pytestmark = pytest.mark.skipif(
    not spconv_available(), reason="spconv not installed (pip install metamixer[sparse])"
)

from ffnet_pointcloud import create_model, list_models  # noqa: E402
from ffnet_pointcloud.models.pooling import SerializedPooling, SerializedUnpooling, segment_reduce  # noqa: E402
from ffnet_pointcloud.serialization import ORDERS  # noqa: E402
from ffnet_pointcloud.structure import Point  # noqa: E402


def _point(n: int = 400, size: int = 16, seed: int = 0, channels: int = 5) -> Point:
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b in range(2):
        grid = torch.unique(torch.randint(0, size, (n, 3), generator=g), dim=0)
        rows.append(torch.cat([torch.full((len(grid), 1), b), grid], 1))
    rows = torch.cat(rows)
    feat = torch.randn(len(rows), channels, generator=g, dtype=torch.float64)
    p = Point(grid_coord=rows[:, 1:], batch=rows[:, 0], feat=feat, coord=rows[:, 1:].double() * 0.02 + 0.01)
    p.serialization(ORDERS, shuffle_orders=True)
    return p.sparsify()


def test_segment_reduce_matches_python_loop() -> None:
    src = torch.randn(50, 4, dtype=torch.float64)
    cluster = torch.randint(0, 7, (50,))
    cluster[:7] = torch.arange(7)
    for reduce, fn in (
        ("max", lambda x: x.max(0).values),
        ("mean", lambda x: x.mean(0)),
        ("sum", lambda x: x.sum(0)),
    ):
        out = segment_reduce(src, cluster, 7, reduce)
        ref = torch.stack([fn(src[cluster == c]) for c in range(7)])
        torch.testing.assert_close(out, ref)


def test_serialized_pooling_matches_brute_force_and_unpooling_restores() -> None:
    torch.manual_seed(0)
    p = _point()
    pool = SerializedPooling(5, 8).double().eval()
    with torch.no_grad():
        pool.norm.running_mean.normal_()
        pool.norm.running_var.uniform_(0.5, 2)
    q = pool(p)
    # brute force: one parent per (batch, grid >> 1); feature = act(BN(max over children of Linear(feat)))
    parents: dict[tuple[int, int, int, int], list[int]] = {}
    for i, (b, x, y, z) in enumerate(torch.cat([p.batch[:, None], p.grid_coord >> 1], 1).tolist()):
        parents.setdefault((b, x, y, z), []).append(i)
    assert len(q.feat) == len(parents)
    proj = pool.proj(p.feat)
    got = {tuple([int(q.batch[j])] + q.grid_coord[j].tolist()): j for j in range(len(q.feat))}
    assert set(got) == set(parents)
    bn = pool.norm
    for key, children in parents.items():
        j = got[key]
        pre = proj[children].max(0).values
        ref = torch.nn.functional.gelu(
            (pre - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        )
        torch.testing.assert_close(q.feat[j], ref)
        torch.testing.assert_close(q.coord[j], p.coord[children].mean(0))
        assert torch.all(q.pooling_inverse[children] == j)
    # pooled codes are the parents' codes in every order (nested curves) and sorted by serialized_order
    assert q.serialized_code.shape == (4, len(q.feat))
    for k in range(4):
        c = q.serialized_code[k][q.serialized_order[k]]
        assert torch.all(c[1:] > c[:-1])
    # unpooling: child = act(BN(Linear(skip))) + act(BN(Linear(coarse)))[parent]
    unpool = SerializedUnpooling(8, 5, 6).double().eval()
    r = unpool(q)
    assert r.feat.shape == (len(p.feat), 6)
    torch.testing.assert_close(r.feat, unpool.proj_skip(p.feat) + unpool.proj(q.feat)[q.pooling_inverse])
    assert torch.equal(r.sparse_conv_feat.indices, p.sparse_conv_feat.indices)


def _block_params(c: int) -> int:
    """Analytic FFBlock count: 3 SubM k3 (27C^2 + C) + Linear C->C + 2 LN + 3 BN + FFN C->4C->C."""
    return 3 * (27 * c * c + c) + (c * c + c) + 2 * 2 * c + 3 * 2 * c + (4 * c * c + 4 * c) + (4 * c * c + c)


def _analytic_backbone(enc_d, enc_c, dec_d, dec_c, in_ch=6, k_embed=5) -> int:
    total = k_embed**3 * in_ch * enc_c[0] + 2 * enc_c[0]  # stem conv (no bias) + BN
    for s, (d, c) in enumerate(zip(enc_d, enc_c)):
        if s > 0:
            total += enc_c[s - 1] * c + c + 2 * c  # pooling Linear + BN
        total += d * _block_params(c)
    for s, (d, c) in enumerate(zip(dec_d, dec_c)):
        coarse = enc_c[-1] if s == len(dec_d) - 1 else dec_c[s + 1]
        total += (coarse * c + c + 2 * c) + (enc_c[s] * c + c + 2 * c)  # proj + proj_skip (Linear + BN each)
        total += d * _block_params(c)
    return total


def test_official_parameter_count_matches_formula_and_fact_sheet() -> None:
    model = create_model("ffnet3d", in_channels=6, num_classes=20)
    backbone = sum(p.numel() for p in model.backbone.parameters())
    expected = _analytic_backbone((2, 2, 2, 6, 2), (32, 64, 128, 256, 512), (2, 2, 2, 2), (64, 64, 128, 256))
    assert backbone == expected == 103_211_136
    assert round(backbone / 1e6, 1) == 103.2  # fact sheet: ~103.2 M
    stage = {n: sum(p.numel() for p in m.parameters()) for n, m in model.backbone.enc.named_children()}
    stage.update({n: sum(p.numel() for p in m.parameters()) for n, m in model.backbone.dec.named_children()})
    assert round(stage["enc3"] / 1e6, 1) == 35.5 and round(stage["enc4"] / 1e6, 1) == 47.3
    assert round(stage["dec3"] / 1e6, 1) == 12.0
    assert sum(p.numel() for p in model.seg_head.parameters()) == 64 * 20 + 20
    # official layout details: BN eps/momentum, stem k5 without bias, SubM weights [out, k, k, k, in]
    stem = model.backbone.embedding.stem
    assert stem.conv.weight.shape == (32, 5, 5, 5, 6) and stem.conv.bias is None
    block = model.backbone.enc.enc3.block0
    assert (
        block.conv1.weight.shape == (256, 3, 3, 3, 256)
        and block.bn1.eps == 1e-3
        and block.bn1.momentum == 0.01
    )
    assert block.mlp.fc1.out_features == 1024
    # drop path: encoder ramp 0 -> 0.3 over the 14 encoder blocks; each decoder stage gets its slice reversed
    assert _drop_prob(model.backbone.enc.enc0.block0.drop_path) == 0.0
    assert _drop_prob(model.backbone.enc.enc4.block1.drop_path) == pytest.approx(0.3)
    assert _drop_prob(model.backbone.dec.dec3.block0.drop_path) == pytest.approx(0.3)
    assert _drop_prob(model.backbone.dec.dec0.block1.drop_path) == 0.0
    del model


def _drop_prob(module: torch.nn.Module) -> float:
    for name in ("drop_prob", "p"):
        if hasattr(module, name):
            return float(getattr(module, name))
    raise AssertionError("no drop probability attribute")


def test_paper_variant_and_drop_path_ramps() -> None:
    model = create_model("ffnet3d_paper", num_classes=13, act="relu")
    backbone = sum(p.numel() for p in model.backbone.parameters())
    expected = _analytic_backbone((0, 2, 2, 6, 2), (32, 64, 128, 256, 512), (1, 1, 1, 1), (64, 64, 128, 256))
    assert backbone == expected
    assert isinstance(model.backbone.enc.enc1.block0.act, torch.nn.ReLU)
    enc = [
        _drop_prob(m.drop_path)
        for n, m in model.backbone.enc.named_modules()
        if n.count("block") == 1 and n.split(".")[-1].startswith("block")
    ]
    assert enc[0] == 0.0 and enc[-1] == pytest.approx(0.3) and enc == sorted(enc)
    assert "ffnet3d" in list_models() and "ffnet3d_paper" in list_models()


def test_tiny_model_forward_backward_and_head_api() -> None:
    torch.manual_seed(0)
    model = create_model("ffnet3d_tiny", num_classes=4)
    p = _point(300, 24, channels=6)
    p["feat"] = p["feat"].float()
    p["coord"] = p["coord"].float()
    logits = model(Point({k: p[k] for k in ("grid_coord", "batch", "feat", "coord")}))
    assert logits.shape == (len(p.feat), 4) and torch.isfinite(logits).all()
    logits.logsumexp(1).mean().backward()
    grads = [q.grad for q in model.parameters() if q.requires_grad]
    assert all(g is not None for g in grads)
    model.eval()
    with torch.no_grad():
        inp = Point({k: p[k] for k in ("grid_coord", "batch", "feat", "coord")})
        feats = model.forward_features(inp)
        assert feats.shape == (len(p.feat), model.backbone.out_channels)
        torch.testing.assert_close(
            model.forward_head(feats),
            model(Point({k: p[k] for k in ("grid_coord", "batch", "feat", "coord")})),
        )


def test_model_input_and_name_errors() -> None:
    with pytest.raises(FFNetError, match="unknown model"):
        create_model("ffnet3d_huge")
    with pytest.raises(FFNetError, match="unknown model option"):
        create_model("ffnet3d_tiny", depth=3)
    with pytest.raises(FFNetError, match="dec_depths"):
        create_model("ffnet3d_tiny", dec_depths=(1, 1))
    model = create_model("ffnet3d_tiny", in_channels=6, num_classes=3)
    p = _point(50, 8, channels=3)
    with pytest.raises(FFNetError, match=r"\[N, 6\]"):
        model(Point({k: p[k] for k in ("grid_coord", "batch", "feat", "coord")}))


def test_output_does_not_depend_on_serialization_order() -> None:
    """Pooling clusters come from code >> 3 of whichever order is first; nesting makes them identical, so the
    network output must not change with the order (this is why the official code may shuffle orders)."""
    torch.manual_seed(0)
    a = create_model("ffnet3d_tiny", num_classes=4, order=("z",)).eval()
    b = create_model("ffnet3d_tiny", num_classes=4, order=("hilbert-trans",)).eval()
    b.load_state_dict(a.state_dict())
    p = _point(300, 24, channels=6)
    inp = {
        k: (p[k].float() if k in ("feat", "coord") else p[k])
        for k in ("grid_coord", "batch", "feat", "coord")
    }
    with torch.no_grad():
        torch.testing.assert_close(a(Point(inp)), b(Point(inp)), rtol=1e-5, atol=1e-5)
