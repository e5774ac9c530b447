"""Model fidelity: exact official keys/shapes (train + fused), parameter counts, MACs, fuse equivalence,
timm contract. Shape-only checks run on the meta device, so all four variants cost a few seconds."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ffnet_classification import create_model
from ffnet_classification.models import PAPER_DROP_PATH, FFNet, FFNetFeatures
from metamixer.nn.flops import count_macs
from metamixer.train.errors import FFNetError

MANIFESTS = Path(__file__).parent / "manifests"
VARIANTS = ["ffnet_1", "ffnet_2", "ffnet_3", "ffnet_4"]
# official_architecture.md §1.1 (measured on the authors' code)
PARAMS_TRAIN = {"ffnet_1": 13_775_656, "ffnet_2": 27_208_408, "ffnet_3": 48_817_896, "ffnet_4": 79_868_968}
PARAMS_FUSED = {"ffnet_1": 13_660_152, "ffnet_2": 26_908_440, "ffnet_3": 48_330_632, "ffnet_4": 79_200_360}
MACS_FUSED_256 = {"ffnet_1": 2.985, "ffnet_2": 6.003, "ffnet_3": 10.146, "ffnet_4": 19.166}
MACS_TRAIN_256 = {"ffnet_1": 3.001, "ffnet_2": 6.061, "ffnet_3": 10.236, "ffnet_4": 19.299}
MACS_FUSED_384 = {"ffnet_3": 22.83, "ffnet_4": 43.12}

TINY = dict(widths=[16, 32, 64, 128], depths=[1, 1, 2, 1], stem_dim=8)


def manifest(name: str) -> dict[str, list[int]]:
    with gzip.open(MANIFESTS / f"{name}.json.gz", "rt") as fh:
        return json.load(fh)


def meta_model(name: str, **kw) -> FFNet:
    with torch.device("meta"):
        return create_model(name, **kw).eval()


def shapes(model: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize("name", VARIANTS)
def test_train_and_fused_state_dicts_equal_official_manifests(name: str) -> None:
    model = meta_model(name)
    got, want = shapes(model), manifest(name)
    assert list(got) == list(want), f"{name}: key order/set differs"
    assert got == want
    fused = model.fuse()
    got_f, want_f = shapes(fused), manifest(f"{name}_deploy")
    assert list(got_f) == list(want_f)
    assert got_f == want_f
    assert sum(p.numel() for p in model.parameters()) == PARAMS_TRAIN[name]
    assert sum(p.numel() for p in fused.parameters()) == PARAMS_FUSED[name]


@pytest.mark.parametrize("name", VARIANTS)
def test_macs_match_fact_sheet_at_256(name: str) -> None:
    model = meta_model(name)
    x = torch.empty(1, 3, 256, 256, device="meta")
    assert count_macs(model.fuse(), x) / 1e9 == pytest.approx(MACS_FUSED_256[name], abs=6e-4)
    assert count_macs(model, x) / 1e9 == pytest.approx(MACS_TRAIN_256[name], abs=6e-4)


@pytest.mark.parametrize("name", ["ffnet_3_384", "ffnet_4_384"])
def test_macs_at_384(name: str) -> None:
    model = meta_model(name)
    assert model.pretrained_cfg["input_size"] == (3, 384, 384)
    x = torch.empty(1, 3, 384, 384, device="meta")
    assert count_macs(model.fuse(), x) / 1e9 == pytest.approx(MACS_FUSED_384[name.replace("_384", "")], abs=6e-3)


def test_default_configs() -> None:
    m1, m3 = meta_model("ffnet_1"), meta_model("ffnet_3")
    assert m1.pretrained_cfg["crop_pct"] == 0.9 and m3.pretrained_cfg["crop_pct"] == 0.95
    assert m1.pretrained_cfg["interpolation"] == "bicubic" and m1.pretrained_cfg["input_size"] == (3, 256, 256)
    # timm's default drop-path is 0 for every model; the paper's rates are asked for (the recipes do)
    assert [m.spec.drop_path_rate for m in map(meta_model, VARIANTS)] == [0.0] * 4
    assert [PAPER_DROP_PATH[n] for n in VARIANTS] == [0.1, 0.15, 0.35, 0.4]
    m3 = meta_model("ffnet_3", drop_path_rate=PAPER_DROP_PATH["ffnet_3"])
    # drop-path grows linearly over all blocks; both mixers of a block share the rate
    rates = [b.token_mixer[0].drop_path.p for s in m3.stages for b in s if hasattr(b, "token_mixer")]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.35) and len(rates) == 35
    assert all(b.channel_mixer.drop_path.p == b.token_mixer[0].drop_path.p
               for s in m3.stages for b in s if hasattr(b, "token_mixer"))


def _randomize_bn_and_ls(model: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.weight.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
                mod.bias.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
        for name, p in model.named_parameters():
            if name.endswith("layer_scale"):
                p.copy_(torch.rand(p.shape, generator=g) * 0.5 + 0.5)


@pytest.mark.parametrize("kw", [TINY, dict(TINY, channel_kernels=[7, 7, 7, 7], layer_scale_init=1e-6)],
                         ids=["tiny_ffnet_1_layout", "tiny_ffnet_3_layout"])
def test_fused_equals_unfused(kw: dict) -> None:
    _check_fuse(create_model("ffnet_1", num_classes=10, **kw))


@pytest.mark.slow
@pytest.mark.parametrize("name", VARIANTS)
def test_fused_equals_unfused_full_size(name: str) -> None:
    _check_fuse(create_model(name))


def _check_fuse(model: FFNet) -> None:
    torch.manual_seed(0)
    model = model.eval()
    _randomize_bn_and_ls(model)
    x = torch.randn(2, 3, 64, 64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        ref = model(x)
        fused = model.fuse()
        out = fused(x)
    assert fused.is_fused and not model.is_fused
    rel = (out - ref).abs().max() / ref.abs().max()
    assert rel < 1e-5, f"relative error {rel:.2e}"
    # out of place, no aliasing, idempotent
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    ptrs = {p.data_ptr() for p in model.parameters()}
    assert not ptrs & {p.data_ptr() for p in fused.parameters()}
    twice = fused.fuse()
    assert shapes(twice) == shapes(fused)
    with torch.no_grad():
        assert torch.equal(twice(x), out)
    # the final norm BN is kept unfused (official deploy keys have norm.running_mean)
    assert isinstance(fused.norm, torch.nn.BatchNorm2d)


def test_timm_contract() -> None:
    torch.manual_seed(0)
    model = create_model("ffnet_1", num_classes=7, **TINY).eval()
    x = torch.randn(2, 3, 64, 64)
    feats = model.forward_features(x)
    assert feats.shape == (2, 128, 2, 2)
    pooled = model.forward_head(feats, pre_logits=True)
    assert pooled.shape == (2, 128)
    assert torch.allclose(model.forward_head(feats), model(x))
    final, inter = model.forward_intermediates(x)
    assert [t.shape[-1] for t in inter] == [16, 8, 4, 2]  # strides 4/8/16/32
    assert [t.shape[1] for t in inter] == [16, 32, 64, 128]
    assert torch.allclose(final, feats)
    only = model.forward_intermediates(x, indices=2, intermediates_only=True)
    assert [t.shape[-1] for t in only] == [4, 2]
    assert [f["reduction"] for f in model.feature_info] == [4, 8, 16, 32]
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.num_classes == 3
    model.reset_classifier(0)
    assert model(x).shape == (2, 128)
    ls = create_model("ffnet_1", **dict(TINY, layer_scale_init=1e-6))
    nwd = ls.no_weight_decay()
    assert nwd and all(n.endswith("layer_scale") for n in nwd)
    assert len(nwd) == 2 * sum(TINY["depths"])


def test_features_only_backbone() -> None:
    model = create_model("ffnet_1", features_only=True, out_indices=(1, 2, 3), **TINY).eval()
    assert isinstance(model, FFNetFeatures)
    outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1:] for o in outs] == [(32, 8, 8), (64, 4, 4), (128, 2, 2)]
    assert model.feature_info.channels() == [32, 64, 128] and model.feature_info.reduction() == [8, 16, 32]
    assert not any(k.startswith(("head.", "norm.")) for k in model.state_dict())


def test_grad_checkpointing_gives_same_gradients() -> None:
    torch.manual_seed(0)
    model = create_model("ffnet_1", num_classes=5, drop_path_rate=0.0, **TINY).train()
    x = torch.randn(2, 3, 64, 64)
    model(x).sum().backward()
    ref = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(x).sum().backward()
    for a, p in zip(ref, model.parameters()):
        assert torch.allclose(a, p.grad, atol=1e-6)


def test_drop_path_only_in_training() -> None:
    torch.manual_seed(0)
    model = create_model("ffnet_1", num_classes=5, drop_path_rate=0.5, **TINY)
    x = torch.randn(2, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


def test_unknown_model_and_argument_errors() -> None:
    with pytest.raises(FFNetError, match="unknown model"):
        create_model("ffnet_9")
    with pytest.raises(FFNetError, match="unknown argument"):
        create_model("ffnet_1", widht=3)
    with pytest.raises(FFNetError, match="no FFNet weights are downloadable"):
        create_model("ffnet_1", pretrained=True)


def test_import_does_not_import_timm() -> None:
    code = "import sys, ffnet_classification; print('timm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cpu_inference_layout_is_the_fused_model() -> None:
    from ffnet_classification.models.cpu_opt import ChannelMultiplierConv2d, optimize_for_cpu

    torch.manual_seed(0)
    model = create_model("ffnet_1", num_classes=10, **TINY).eval()
    _randomize_bn_and_ls(model)
    fused = model.fuse()
    fast = optimize_for_cpu(model)
    assert sum(isinstance(m, ChannelMultiplierConv2d) for m in fast.modules()) == 3  # one per downsampler
    assert shapes(fast) == shapes(fused)  # same (official deploy) keys
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = fused(x)
        out = fast(x.contiguous(memory_format=torch.channels_last))
    assert (out - ref).abs().max() / ref.abs().max() < 1e-5


def test_cpu_deploy_path_equals_the_fused_model() -> None:
    """The CLIs' deploy form (optimize_for_cpu + channels-last; optionally core's fused-kernel blocks) against fuse()."""
    from ffnet_classification.models.cpu_opt import prepare_for_inference
    from metamixer.nn.blocks import FFNetBlock
    from metamixer.nn.inference import fast_block_count

    torch.manual_seed(0)
    model = create_model("ffnet_1", num_classes=10, **TINY).eval()
    _randomize_bn_and_ls(model)
    fused = model.fuse()
    deploy, kernels = prepare_for_inference(model), prepare_for_inference(model, fast_blocks=True)
    blocks = sum(isinstance(m, FFNetBlock) for m in fused.modules())
    assert blocks == sum(TINY["depths"]) and fast_block_count(kernels) == blocks  # every block runs fused
    assert fast_block_count(deploy) == 0  # the default: oneDNN's channels-last convs (faster for these shapes)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = fused(x)
        for form in (deploy, kernels):
            out = form(x)  # any layout in: converted on entry
            assert (out - ref).abs().max() / ref.abs().max() < 1e-4
