"""FFNet-TS architecture: key/shape parity with the official manifests, parameter counts, fusion, fused k=51 convs stay on the fast path."""

from __future__ import annotations

import copy
import json
import math
import re
from pathlib import Path

import pytest
import torch

from ffnet_timeseries import create_model
from ffnet_timeseries.models import DepthwiseConv1dToeplitz
from ffnet_timeseries.weights import load_official_weights, split_dead_keys
from metamixer.train.errors import FFNetError

MANIFESTS = Path(__file__).parent / "manifests"
# (n_vars, ffn_ratio, pred_len) of each official manifest (fact sheet §3.2/§3.3)
CASES = {
    "ETTh1_pl96": (7, 2, 96), "ETTh1_pl192": (7, 2, 192), "ETTh1_pl336": (7, 2, 336), "ETTh1_pl720": (7, 2, 720),
    "ETTh2_pl96": (7, 8, 96), "ETTm1_pl96": (7, 12, 96), "ETTm2_pl96": (7, 12, 96), "Weather_pl96": (21, 12, 96),
    "ECL_pl96": (321, 12, 96), "Traffic_pl96": (862, 12, 96),
}
# official full parameter counts (fact sheet §3.2), which include 50,516 never-used parameters (M=7)
OFFICIAL_TOTAL = {"ETTh1_pl96": 549_620, "ETTh1_pl192": 844_628, "ETTh1_pl336": 1_287_140, "ETTh1_pl720": 2_467_172,
                  "ETTh2_pl96": 743_156, "ETTm1_pl96": 872_180, "ETTm2_pl96": 872_180, "Weather_pl96": 2_187_508,
                  "ECL_pl96": 114_776_308, "Traffic_pl96": 725_474_420}
BUFFER = re.compile(r"(running_mean|running_var|num_batches_tracked)$")


def _manifest(name: str) -> dict[str, list[int]]:
    return json.loads((MANIFESTS / f"ffnet_ts_{name}.json").read_text())


@pytest.mark.parametrize("name", sorted(CASES))
def test_keys_and_shapes_are_a_subset_of_the_official_manifest(name: str) -> None:
    n_vars, ratio, pred_len = CASES[name]
    with torch.device("meta"):  # ECL/Traffic are 115M/725M parameters: shapes only
        model = create_model(n_vars, 96, pred_len, ffn_ratio=ratio)
    manifest = _manifest(name)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert {k: manifest.get(k) for k in ours} == ours
    # everything we leave out is a module the official forward never uses
    _, dropped = split_dead_keys(manifest)
    assert sorted(set(manifest) - set(ours)) == sorted(dropped)
    dead_params = sum(math.prod(manifest[k]) for k in dropped if not BUFFER.search(k))
    ours_params = sum(p.numel() for p in model.parameters())
    assert ours_params + dead_params == OFFICIAL_TOTAL[name]
    if n_vars == 7:
        assert dead_params == 50_516


def test_etth1_parameter_count_and_shapes() -> None:
    model = create_model(7, 96, 96, ffn_ratio=2)
    assert sum(p.numel() for p in model.parameters()) == 499_104
    x = torch.randn(2, 96, 7)
    feats = model.forward_features(x)
    assert feats.shape == (2, 7, 64, 48)
    assert model.forward_head(feats).shape == (2, 7, 96)
    assert model(x).shape == (2, 96, 7)


def test_official_state_dict_loads_and_dead_keys_are_reported() -> None:
    torch.manual_seed(0)
    manifest = _manifest("ETTh1_pl96")
    official = {k: (torch.randn(v) if v else torch.tensor(3)) for k, v in manifest.items()}
    model = create_model(7, 96, 96, ffn_ratio=2)
    dropped = load_official_weights(model, official)
    assert len(dropped) == len(manifest) - len(model.state_dict())
    assert all(k.startswith(("model.te_patch", "model.lat_layer", "model.smooth_layer", "model.up_sample_conv",
                             "model.downsample_layers.1", "model.downsample_layers.2", "model.downsample_layers.3"))
               for k in dropped)
    assert torch.equal(model.state_dict()["model.head.linear.weight"], official["model.head.linear.weight"])
    wrong = dict(official, **{"model.head.linear.weight": torch.randn(192, 3072)})
    with pytest.raises(FFNetError, match="head.linear.weight"):
        load_official_weights(create_model(7, 96, 96, ffn_ratio=2), wrong)


def _randomize_bn(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_(1, 0.3)
            m.bias.data.normal_(0, 0.3)


@pytest.mark.parametrize("options", [{}, {"mixing": "channel_independent"}, {"dims": [16, 32], "num_blocks": [1, 2]},
                                     {"affine": True, "small_kernel": 3, "large_kernel": 13, "dims": [16]}])
def test_fuse_matches_unfused_and_is_out_of_place(options: dict) -> None:
    torch.manual_seed(0)
    model = create_model(5, 96, 24, ffn_ratio=3, **options)
    _randomize_bn(model)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(3, 96, 5) * 3 + 1
    fused = model.fuse()
    assert not fused.training
    assert not any("small_conv" in k or "lkb_origin" in k for k in fused.state_dict())
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in fused.modules())  # every BN folded
    assert torch.allclose(fused(x), model(x), atol=1e-5, rtol=0)
    # the training model is untouched and shares no storage with the fused copy
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    fused_ptrs = {p.data_ptr() for p in fused.parameters()}
    assert not fused_ptrs & {p.data_ptr() for p in model.parameters()}
    again = fused.fuse()  # idempotent
    assert torch.allclose(again(x), fused(x), atol=1e-6)
    # the fused k=51 convs still run as Toeplitz matmuls on CPU
    assert isinstance(fused.model.stages[0].blocks[0].channel_mixer.dw, DepthwiseConv1dToeplitz)


def test_channel_independent_mode_scales_linearly_in_variables() -> None:
    def mixing_weights(m: torch.nn.Module) -> int:
        keys = ("token_mixer.ffnpw1.weight", "channel_mixer.ffnpw2.weight")
        return sum(p.numel() for k, p in m.named_parameters() if k.endswith(keys))

    d, r = 64, 2
    for n in (10, 20):
        assert mixing_weights(create_model(n, 96, 96, ffn_ratio=r)) == 2 * n * n * d + n * n * d * r  # M^2
        ci = create_model(n, 96, 96, ffn_ratio=r, mixing="channel_independent")
        assert mixing_weights(ci) == 2 * n * d * d + n * d * d * r  # linear in M
        assert ci(torch.randn(2, 96, n)).shape == (2, 96, n)


def test_wrong_input_shape_is_a_clear_error() -> None:
    model = create_model(7, 96, 96)
    with pytest.raises(ValueError, match=r"seq_len=96, n_vars=7"):
        model(torch.randn(2, 96, 8))


def _reference_block(block, x: torch.Tensor) -> torch.Tensor:
    """The authors' formulation on ``[B, M, D, N]`` with grouped ``F.conv1d`` calls (eval mode, no dropout):
    what the channel-major batched-matmul implementation must reproduce with the same weights."""
    import torch.nn.functional as F

    tm, cm = block.token_mixer, block.channel_mixer
    b, m, d, n = x.shape
    y = x.transpose(1, 2).reshape(b, d * m, n)  # feature-major: D groups of M variables
    y = F.gelu(F.conv1d(y, tm.ffnpw1.weight, tm.ffnpw1.bias, groups=d))  # [B, D*(2M), N]
    y = y.reshape(b, d, 2 * m, n).transpose(1, 2).reshape(b, -1, n)  # M groups of 2D channels
    y = F.conv1d(y, tm.ffnpw2.weight, tm.ffnpw2.bias, groups=m)
    y = tm.norm(y.reshape(b * m, d, n)).reshape(b, m * d, n)
    y = F.conv1d(F.gelu(F.conv1d(y, tm.dw1.weight, tm.dw1.bias, padding=25, groups=m * d)),
                 tm.dw2.weight, tm.dw2.bias, padding=25, groups=m * d)
    x = x + y.reshape(b, m, d, n)
    z = x.reshape(b, m * d, n)
    y = sum(br.bn_module(F.conv1d(z, br.conv_module.weight, None, padding=br.conv_module.padding, groups=m * d))
            for br in cm.dw.branches())
    y = cm.norm(y.reshape(b * m, d, n)).reshape(b, m * d, n)
    y = F.gelu(F.conv1d(y, cm.ffnpw1.weight, cm.ffnpw1.bias, groups=m))  # [B, M*dff, N]
    r = cm.ffn_ratio
    y = y.reshape(b, m, d * r, n).transpose(1, 2).reshape(b, -1, n)  # D groups of r*M channels
    y = F.conv1d(y, cm.ffnpw2.weight, cm.ffnpw2.bias, groups=d)
    return x + y.reshape(b, d, m, n).transpose(1, 2)


@pytest.fixture(params=["cpu_fast_paths", "generic_paths"])
def code_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test twice: with the CPU fast paths (sliced FFNs, Toeplitz convs) and with the op-by-op paths that
    GPUs take (``_ffn`` declines, native depthwise ``conv1d``), so the GPU code path is checked on CI's CPU."""
    if request.param == "generic_paths":
        from ffnet_timeseries.models import ffnet_ts
        from metamixer.kernels import fastconv

        monkeypatch.setattr(ffnet_ts, "_ffn", lambda *args, **kwargs: None)
        monkeypatch.setattr(fastconv, "prefer_toeplitz", lambda *args, **kwargs: False)
    return request.param


def test_channel_major_block_equals_grouped_conv_formulation(code_path: str) -> None:
    torch.manual_seed(0)
    model = create_model(5, 96, 24, ffn_ratio=3)
    _randomize_bn(model)
    model.eval()
    block = model.model.stages[0].blocks[0]
    x = torch.randn(4, 5, 64, 48)
    expected = _reference_block(block, x)
    assert torch.allclose(block(x), expected, atol=1e-4)
    assert torch.allclose(model.model.stages[0](x), expected, atol=1e-4)


def test_training_gradients_equal_grouped_conv_formulation(code_path: str) -> None:
    """Train mode (batch-stat BN, dropout p=0 so both sides are deterministic): the fused, cache-sliced FFNs and
    channel-major layers give the authors' formulation's gradients for every parameter and the input."""
    torch.manual_seed(0)
    model = create_model(5, 96, 24, ffn_ratio=3)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model.train()
    block = model.model.stages[0].blocks[0]
    x = torch.randn(4, 5, 64, 48, requires_grad=True)
    weight = torch.randn(4, 5, 64, 48)
    params = [x, *block.parameters()]
    ours = torch.autograd.grad((block(x) * weight).sum(), params)
    reference = torch.autograd.grad((_reference_block(block, x) * weight).sum(), params)
    for got, want in zip(ours, reference):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_bf16_autocast_trains_and_tracks_fp32(code_path: str) -> None:
    """``run.precision=bf16`` (TSLib's --use_amp): a train-mode forward/backward under autocast runs on both code
    paths (the fast paths' custom autograd functions used to meet fp32/bf16 mixes in backward), the fp32
    parameters get fp32 gradients pointing where fp32's do, and eval forecasts stay close to fp32's."""
    torch.manual_seed(0)
    model = create_model(7, 96, 48, ffn_ratio=4)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0  # both sides deterministic
    x, target = torch.randn(8, 96, 7), torch.randn(8, 48, 7)
    model.train()
    want = torch.autograd.grad(torch.nn.functional.mse_loss(model(x), target), list(model.parameters()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred = model(x)
    got = torch.autograd.grad(torch.nn.functional.mse_loss(pred.float(), target), list(model.parameters()))
    for (name, _), g, w in zip(model.named_parameters(), got, want):
        assert g.dtype == torch.float32 and torch.isfinite(g).all(), name
        if w.norm() > 1e-6:  # e.g. the stem conv's bias feeds a BatchNorm: its true gradient is 0
            assert torch.nn.functional.cosine_similarity(g.flatten(), w.flatten(), dim=0) > 0.99, name
    model.eval()
    with torch.no_grad():
        full = model(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(x).float()
    assert (half - full).abs().max() < 0.05 * full.abs().max()


@pytest.mark.parametrize("patch", [(4, 2), (8, 8)])
def test_channel_major_stem_equals_conv_stem(patch: tuple[int, int]) -> None:
    """The stem computed straight into the blocks' channel-major layout (a K=P matmul per variable, BN over
    ``[M, D, B*N]``) against ``Conv1d + BatchNorm1d`` on ``[B*M, 1, L]``: train-mode output, every gradient,
    BN running statistics, and the fused (BN folded) deploy model."""
    from ffnet_timeseries.models import ffnet_ts

    torch.manual_seed(0)
    size, stride = patch
    ours = create_model(5, 96, 24, ffn_ratio=3, patch_size=size, patch_stride=stride)
    reference = copy.deepcopy(ours)
    x = torch.randn(6, 96, 5)
    weight = torch.randn(6, 24, 5)
    torch.manual_seed(1)
    (ours(x) * weight).sum().backward()
    stem_cm = ffnet_ts._stem_cm
    ffnet_ts._stem_cm = lambda *args: None  # the module path, as for stems of another shape
    try:
        torch.manual_seed(1)  # same dropout masks
        (reference(x) * weight).sum().backward()
        with torch.no_grad():
            want_fused = reference.eval().fuse()(x)
    finally:
        ffnet_ts._stem_cm = stem_cm
    scale = reference.model.downsample_layers[0][0].weight.grad.abs().max()
    for (name, got), want in zip(ours.named_parameters(), reference.parameters()):
        if name.endswith("downsample_layers.0.0.bias"):
            # it feeds a BatchNorm, so its true gradient is 0 and both sides hold rounding noise (measured up to
            # 7e-6 each on an AVX2 CPU, 1e-5 apart): both must be noise against the layer's gradient scale
            assert got.grad.abs().max() < 1e-5 * scale and want.grad.abs().max() < 1e-5 * scale, name
            continue
        # atol in units of the tensor's gradient scale: the two paths sum in other orders, and the head's
        # gradients (up to ~28) differ by 6e-6 on an AVX2 CPU, which is fp32 rounding at that size
        atol = 1e-6 * max(1.0, want.grad.abs().max().item())
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-4, atol=atol, msg=name)
    for (name, got), want in zip(ours.named_buffers(), reference.buffers()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval().fuse()(x), want_fused, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CI has none)")
def test_cuda_forward_and_gradients_equal_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU path (op-by-op FFNs, native depthwise convs, F.dropout) against the CPU fast paths, same weights
    (TF32 off: it rounds convs/matmuls to 10-bit mantissas, beyond these tolerances)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch.manual_seed(0)
    model = create_model(7, 96, 96, ffn_ratio=12)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0  # both sides deterministic
    gpu = copy.deepcopy(model).cuda()
    x = torch.randn(16, 96, 7)
    model.train(), gpu.train()
    loss_cpu = model(x).square().mean()
    loss_gpu = gpu(x.cuda()).square().mean()
    loss_cpu.backward(), loss_gpu.backward()
    torch.testing.assert_close(loss_gpu.cpu(), loss_cpu, rtol=1e-4, atol=1e-5)
    for (name, p_cpu), p_gpu in zip(model.named_parameters(), gpu.parameters()):
        torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, rtol=1e-3, atol=1e-5, msg=name)
    model.eval(), gpu.eval()
    with torch.no_grad():
        torch.testing.assert_close(gpu(x.cuda()).cpu(), model(x), rtol=1e-4, atol=1e-5)
