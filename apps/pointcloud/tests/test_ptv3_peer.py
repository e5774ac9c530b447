"""The PTv3-style speed peer: patch attention vs a brute-force loop, order cycling, gradients, parameter count
(derived from layer shapes; PTv3's published 46.2 M), and the benchmark's same-process peer summary."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch

from metamixer.nn.sparse import spconv_available
from metamixer.train.errors import FFNetError

pytestmark = pytest.mark.skipif(
    not spconv_available(), reason="spconv not installed (pip install metamixer[sparse])"
)

from ffnet_pointcloud import create_model, list_models  # noqa: E402
from ffnet_pointcloud.models.ptv3_peer import PTv3StyleBlock, SerializedPatchAttention  # noqa: E402
from ffnet_pointcloud.serialization import ORDERS  # noqa: E402
from ffnet_pointcloud.structure import Point  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]
#: a small network with the peer's structure: 4 stages, a 5-block stage so the order index wraps around
SMALL = dict(enc_depths=(2, 1, 1, 5), enc_channels=(8, 16, 16, 32), enc_heads=(2, 2, 4, 4), dec_depths=(1, 1, 1),
             dec_channels=(16, 16, 16), dec_heads=(2, 2, 2), stride=(2, 2, 2), embed_kernel=3, patch_size=16)


def _point(counts: tuple[int, ...], size: int = 12, seed: int = 0, channels: int = 8,
           dtype: torch.dtype = torch.float64) -> Point:
    """Scenes with exactly ``counts`` distinct voxels each, serialized in all four orders (no shuffle)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for b, n in enumerate(counts):
        cells = torch.randperm(size**3, generator=g)[:n]
        grid = torch.stack([cells // (size * size), (cells // size) % size, cells % size], 1)
        rows.append(torch.cat([torch.full((n, 1), b), grid], 1))
    rows = torch.cat(rows)
    feat = torch.randn(len(rows), channels, generator=g, dtype=dtype)
    p = Point(grid_coord=rows[:, 1:], batch=rows[:, 0], feat=feat, coord=rows[:, 1:].to(dtype) * 0.02)
    return p.serialization(ORDERS, shuffle_orders=False)


def _brute_force_attention(attn: SerializedPatchAttention, feat: torch.Tensor, point: Point, k_order: int,
                           patch: int) -> torch.Tensor:
    """Reference written from the definition: sort every scene by its code, cut patches of K points (K = patch
    size capped by the smallest scene), the short last patch attends over the scene's last K points; softmax
    attention per head, query by query."""
    code = point.serialized_code[k_order].tolist()
    batch = point.batch.tolist()
    scenes = sorted(set(batch))
    members = {b: sorted((i for i in range(len(batch)) if batch[i] == b), key=lambda i: code[i]) for b in scenes}
    k = min(patch, min(len(m) for m in members.values()))
    c, h = attn.dim, attn.heads
    d = c // h
    w, bias = attn.qkv.weight, attn.qkv.bias
    out = torch.zeros_like(feat)
    for ids in members.values():
        n = len(ids)
        for start in range(0, n, k):
            queries = ids[start : start + k]
            keys = queries if len(queries) == k else ids[n - k :]
            for head in range(h):
                sl = slice(head * d, (head + 1) * d)
                for i in queries:
                    q = feat[i] @ w[sl].T + bias[sl]
                    logits = []
                    values = []
                    for j in keys:
                        kj = feat[j] @ w[c + sl.start : c + sl.stop].T + bias[c + sl.start : c + sl.stop]
                        values.append(feat[j] @ w[2 * c + sl.start : 2 * c + sl.stop].T
                                      + bias[2 * c + sl.start : 2 * c + sl.stop])
                        logits.append(float(q @ kj) / math.sqrt(d))
                    top = max(logits)
                    weights = [math.exp(x - top) for x in logits]
                    total = sum(weights)
                    out[i, sl] = sum(wt / total * v for wt, v in zip(weights, values))
    return out @ attn.proj.weight.T + attn.proj.bias


@pytest.mark.parametrize("counts", [(70, 45), (70, 45, 10), (32,)])
def test_patch_attention_matches_brute_force(counts: tuple[int, ...]) -> None:
    # (70, 45): K = 16, both scenes end in a padded patch (6 and 13 new points); (70, 45, 10): the 10-point scene
    # caps K at 10; (32,): exact multiple, no padding
    torch.manual_seed(0)
    point = _point(counts)
    for k_order in range(4):
        attn = SerializedPatchAttention(8, 2, 16, order_index=k_order).double()
        with torch.no_grad():
            for p in attn.parameters():
                p.normal_(0, 0.5)
        with torch.no_grad():
            got = attn(point.feat, point)
            ref = _brute_force_attention(attn, point.feat, point, k_order, 16)
        assert got.shape == point.feat.shape
        assert (got - ref).abs().max().item() < 1e-5
    # attention inside patches really depends on the order: z and hilbert patches differ, so do the outputs
    a = SerializedPatchAttention(8, 2, 16, order_index=0).double()
    b = SerializedPatchAttention(8, 2, 16, order_index=2).double()
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        assert (a(point.feat, point) - b(point.feat, point)).abs().max().item() > 1e-3


def test_each_block_uses_the_next_order() -> None:
    torch.manual_seed(0)
    model = create_model("ptv3_style", in_channels=8, num_classes=5, **SMALL).double().eval()
    used: dict[str, torch.Tensor] = {}

    def record(name: str):  # noqa: ANN202
        def hook(module: SerializedPatchAttention, args: tuple) -> None:
            point = args[1]
            gather, unpad, _ = module.layout(point)
            # the points in the slots that hold real outputs, in slot order: the walk the block attends along
            used[name] = gather[torch.sort(unpad).values].clone()
        return hook

    for name, m in model.named_modules():
        if isinstance(m, SerializedPatchAttention):
            m.register_forward_pre_hook(record(name))
    point = _point((300, 200), size=32)
    with torch.no_grad():
        model(point)
    stage0 = [used["backbone.enc.enc0.block0.attn"], used["backbone.enc.enc0.block1.attn"]]
    torch.testing.assert_close(stage0[0], point.serialized_order[0], rtol=0, atol=0)
    torch.testing.assert_close(stage0[1], point.serialized_order[1], rtol=0, atol=0)
    assert not torch.equal(stage0[0], stage0[1])
    enc3 = [m for n, m in model.named_modules() if n.startswith("backbone.enc.enc3.block") and n.endswith("attn")]
    assert [m.order_index % 4 for m in enc3] == [0, 1, 2, 3, 0]
    orders = [used[f"backbone.enc.enc3.block{i}.attn"] for i in range(5)]
    assert all(not torch.equal(orders[i], orders[i + 1]) for i in range(3))
    torch.testing.assert_close(orders[4], orders[0], rtol=0, atol=0)


def test_forward_shape_and_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    model = create_model("ptv3_style", in_channels=8, num_classes=5, **SMALL).train()
    point = _point((300, 200), size=32, dtype=torch.float32)
    logits = model(point)
    assert logits.shape == (500, 5)
    loss = torch.nn.functional.cross_entropy(logits, torch.arange(500) % 5)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        g = p.grad
        if name.endswith("attn.qkv.bias"):  # the key bias adds a per-query constant to the logits: zero gradient
            c = g.shape[0] // 3
            g = torch.cat([g[:c], g[2 * c :]])
        assert g.abs().sum() > 0, name
    with torch.no_grad():
        assert model.eval()(point).shape == (500, 5)


def _linear(i: int, o: int) -> int:
    return i * o + o


def _block(c: int, ratio: int = 4) -> int:
    cpe = (27 * c * c + c) + _linear(c, c) + 2 * c  # SubM k3 with bias, Linear, LayerNorm
    attn = 2 * c + _linear(c, 3 * c) + _linear(c, c)  # pre-norm, qkv, proj
    mlp = 2 * c + _linear(c, ratio * c) + _linear(ratio * c, c)  # pre-norm, fc1, fc2
    return cpe + attn + mlp


def test_full_config_parameter_count_from_layer_shapes() -> None:
    enc_d, enc_c = (2, 2, 2, 6, 2), (32, 64, 128, 256, 512)
    dec_d, dec_c = (2, 2, 2, 2), (64, 64, 128, 256)
    stem = 125 * 6 * 32 + 2 * 32  # SubM k5 6 -> 32, no bias; BN
    enc = [enc_d[s] * _block(enc_c[s]) + (_linear(enc_c[s - 1], enc_c[s]) + 2 * enc_c[s] if s else 0)
           for s in range(5)]
    dec = []
    for s in range(4):
        coarse = enc_c[4] if s == 3 else dec_c[s + 1]
        up = _linear(coarse, dec_c[s]) + 2 * dec_c[s] + _linear(enc_c[s], dec_c[s]) + 2 * dec_c[s]
        dec.append(up + dec_d[s] * _block(dec_c[s]))
    expected = stem + sum(enc) + sum(dec) + _linear(64, 20)
    model = create_model("ptv3_style", in_channels=6, num_classes=20)
    assert "ptv3_style" in list_models()
    count = sum(p.numel() for p in model.parameters())
    assert count == expected
    enc_params = [sum(p.numel() for p in getattr(model.backbone.enc, f"enc{s}").parameters()) for s in range(5)]
    assert enc_params == enc
    # PTv3 publishes 46.2 M (one decimal): within its rounding, 0.05 M
    assert abs(count - 46.2e6) <= 0.05e6, count
    blocks = [m for m in model.modules() if isinstance(m, PTv3StyleBlock)]
    assert len(blocks) == sum(enc_d) + sum(dec_d)
    assert [b.attn.heads for b in blocks[:4]] == [2, 2, 4, 4] and all(b.attn.patch_size == 1024 for b in blocks)


def test_bad_config_is_one_clear_error() -> None:
    with pytest.raises(FFNetError, match="not divisible"):
        create_model("ptv3_style", enc_heads=(3, 4, 8, 16, 32))
    with pytest.raises(FFNetError, match="dec_heads"):
        create_model("ptv3_style", dec_heads=(4, 4, 8))
    with pytest.raises(FFNetError, match="unknown model option"):
        create_model("ptv3_style", kernel_size=5)


def test_benchmark_single_process_peer_summary(tmp_path: Path) -> None:
    from metamixer.bench import read_summary

    summary = tmp_path / "pc.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "pc_speed.py"), "--single", "--model", "ffnet3d_tiny",
         "--peer", "ptv3_style", "--points", "3000", "--reps", "1", "--threads", "1", "--summary", str(summary)],
        capture_output=True, text=True, timeout=600, env=env, cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["points"] == 3000 and row["model"] == "ffnet3d_tiny" and row["peer"]["model"] == "ptv3_style"
    assert row["peer"]["params_M"] == 46.17
    entries = read_summary(summary)["speed_summary"]
    assert len(entries) == 2
    for entry, key in zip(entries, ("s_per_100k_points", "infer_s_per_100k_points")):
        assert entry["app"] == "pointcloud" and entry["peer"] is not None
        assert entry["ours"]["value"] == row[key] and entry["peer"]["value"] == row["peer"][key]
        assert entry["ours"]["unit"] == entry["peer"]["unit"] == "s / 100k points"
        assert entry["ratio"] == pytest.approx(row["peer"][key] / row[key])
    assert "training step" in entries[0]["what"] and "inference" in entries[1]["what"]
