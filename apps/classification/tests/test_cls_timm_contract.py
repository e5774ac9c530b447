"""The assertions of timm's own model tests (pytorch-image-models ``tests/test_models.py``) run against FFNet.

Every test takes a ``backend``: ``entrypoint`` calls our timm entrypoint exactly as ``timm.create_model`` does
(``None`` keyword arguments dropped, the name's tag passed as ``pretrained_cfg``, then ``pretrained`` /
``pretrained_cfg_overlay`` / ``cache_dir`` and the model keywords; ``checkpoint_path`` loaded afterwards by a
loader with timm's key preference); ``timm`` runs the same test through the real ``timm.create_model`` and is
skipped where timm cannot be imported (it cannot in this project's environment: timm needs torchvision).
Input sizes are smaller than timm's targets (timm: 384 forward / 128 backward and torchscript / 96 features)
to keep the file fast; the models take any size (``fixed_input_size`` is False), so the checks are the same.
"""
from __future__ import annotations

import io
import math
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from ffnet_classification import timm_registry as reg
from ffnet_classification.models import PAPER_DROP_PATH, FeatureInfo, FFNet, list_models
from ffnet_classification.models.pretrained import DEFAULT_CFGS, resolve_pretrained_cfg
from ffnet_classification.models.registry import create_model
from metamixer.nn.layers import DropPath
from metamixer.train.checkpoint import save_checkpoint
from metamixer.train.errors import FFNetError

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # torch 2.13 deprecates TorchScript

TINY = dict(widths=[16, 32, 64, 128], depths=[1, 1, 1, 1], stem_dim=8)
RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def timm_like_load_checkpoint(model: torch.nn.Module, path: Path, use_ema: bool = True) -> None:
    """timm's ``load_checkpoint``: ``state_dict_ema`` / ``model_ema`` (with use_ema), then ``state_dict``, then
    ``model``, then the object itself; ``module.`` stripped; a strict ``load_state_dict``."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    key = ""
    if isinstance(obj, dict):
        if use_ema and obj.get("state_dict_ema") is not None:
            key = "state_dict_ema"
        elif use_ema and obj.get("model_ema") is not None:
            key = "model_ema"
        elif "state_dict" in obj:
            key = "state_dict"
        elif "model" in obj:
            key = "model"
    sd = obj[key] if key else obj
    model.load_state_dict({k.removeprefix("module."): v for k, v in sd.items()}, strict=True)


def timm_like_create_model(model_name: str, pretrained: bool = False, pretrained_cfg: Any = None,
                           pretrained_cfg_overlay: dict[str, Any] | None = None, checkpoint_path: str = "",
                           scriptable: bool | None = None, exportable: bool | None = None,
                           no_jit: bool | None = None, **kwargs: Any) -> torch.nn.Module:
    """``timm.create_model``'s call of a registered entrypoint (timm 1.0)."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    name, _, tag = model_name.partition(".")
    if tag and not pretrained_cfg:
        pretrained_cfg = tag
    model = reg._make_entrypoint(name)(pretrained=pretrained, pretrained_cfg=pretrained_cfg,
                                       pretrained_cfg_overlay=pretrained_cfg_overlay, cache_dir=None, **kwargs)
    if checkpoint_path:
        timm_like_load_checkpoint(model, Path(checkpoint_path))
    return model


@dataclass
class Backend:
    name: str
    create_model: Callable[..., torch.nn.Module]
    cfg_value: Callable[[str, str], Any]
    feature_info: Callable[..., Any]
    load_checkpoint: Callable[..., Any]


@pytest.fixture(params=["entrypoint", "timm"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "entrypoint":
        yield Backend("entrypoint", timm_like_create_model, lambda n, k: resolve_pretrained_cfg(n).get(k),
                      FeatureInfo, timm_like_load_checkpoint)
        return
    timm = pytest.importorskip("timm")
    from timm.models import FeatureInfo as TimmFeatureInfo
    from timm.models import load_checkpoint

    saved = (reg._REGISTERED, reg.default_cfgs)
    reg._REGISTERED = False
    assert reg.register_timm()
    try:
        yield Backend("timm", timm.create_model, timm.get_pretrained_cfg_value, TimmFeatureInfo, load_checkpoint)
    finally:
        reg._REGISTERED, reg.default_cfgs = saved


def input_size(model: torch.nn.Module, target: int) -> tuple[int, int, int]:
    """timm's ``_get_input_size``: the cfg size, capped at ``target`` unless the size is fixed."""
    size = model.default_cfg["input_size"]
    if model.default_cfg.get("fixed_input_size"):
        return size
    return tuple(min(s, target) if i else s for i, s in enumerate(size))  # type: ignore[return-value]


# ------------------------------------------------------------------------------- timm's test_models.py
def test_model_forward(backend: Backend) -> None:
    torch.manual_seed(0)
    model = backend.create_model("ffnet_1", pretrained=False).eval()
    x = torch.randn(1, *input_size(model, 64))
    with torch.no_grad():
        out = model(x)
        assert out.shape == (1, 1000) and not torch.isnan(out).any()
        model.set_grad_checkpointing()
        assert torch.allclose(model(x), out, rtol=1e-4, atol=1e-5)


def test_model_backward(backend: Backend) -> None:
    torch.manual_seed(0)
    model = backend.create_model("ffnet_1", pretrained=False, num_classes=42).train()
    n_params = sum(p.numel() for p in model.parameters())
    out = model(torch.randn(2, 3, 64, 64))
    out.mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient for {missing[:5]}"
    assert out.shape[-1] == 42 and not torch.isnan(out).any()
    assert sum(p.grad.numel() for p in model.parameters()) == n_params


@pytest.mark.parametrize("fused", [False, True], ids=["train_form", "fused"])
def test_model_default_cfgs(backend: Backend, fused: bool) -> None:
    """timm's checks at the cfg's own input size (256): pool_size, num_features, head_hidden_size, the
    classifier/pooling resets, and first_conv / classifier naming real parameters (also after fuse())."""
    torch.manual_seed(0)
    model = backend.create_model("ffnet_1", pretrained=False).eval()
    if fused:
        model = model.fuse()
    assert model.num_classes >= 0 and model.num_features > 0 and model.head_hidden_size > 0
    cfg, state = model.default_cfg, model.state_dict()
    assert cfg is model.pretrained_cfg and cfg["fixed_input_size"] is False
    assert cfg["architecture"] == "ffnet_1" and cfg["tag"] == "in1k"
    pool = cfg["pool_size"]
    x = torch.randn(1, *cfg["input_size"])
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        assert feats.shape[-2:] == pool and feats.shape[1] == model.num_features
        assert pre.shape[1] == model.head_hidden_size
        model.reset_classifier(0)
        assert model.num_classes == 0
        out = model(x)
        assert out.ndim == 2 and out.shape[1] == model.head_hidden_size and out.shape == pre.shape
        model.reset_classifier(0, "")
        out = model(x)
        assert out.ndim == 4 and out.shape[-2:] == pool
        if not fused:  # the same through __init__ (once: it is the train-form constructor either way)
            out = backend.create_model("ffnet_1", pretrained=False, num_classes=0, global_pool="").eval()(x)
            assert out.ndim == 4 and out.shape[-2:] == pool
    assert f"{cfg['classifier']}.weight" in state
    assert f"{cfg['first_conv']}.weight" in state
    assert cfg["first_conv"] == ("patch_embed.0" if fused else "patch_embed.0.c")


def test_model_forward_torchscript(backend: Backend) -> None:
    """timm's torchscript test on FFNet-1, for the train form and the fused form; the train form is also run
    scripted in training mode (drop-path on), and a scripted model survives save/load."""
    torch.manual_seed(0)
    model = backend.create_model("ffnet_1", pretrained=False, scriptable=True, drop_path_rate=0.1).eval()
    x = torch.randn(1, *input_size(model, 64))
    for form in (model, model.fuse()):
        scripted = torch.jit.script(form)
        with torch.no_grad():
            out = scripted(x)
            assert out.shape[0] == 1 and not torch.isnan(out).any()
            assert torch.allclose(out, form(x), atol=1e-5)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    with torch.no_grad():
        assert torch.equal(torch.jit.load(buf)(x), scripted(x))
    train = torch.jit.script(model.train())
    out = train(torch.randn(2, 3, 32, 32))
    out.sum().backward()
    assert out.shape == (2, 1000) and torch.isfinite(out).all()


def test_model_forward_features(backend: Backend) -> None:
    torch.manual_seed(0)
    model = backend.create_model("ffnet_1", pretrained=False, features_only=True).eval()
    channels, reduction = model.feature_info.channels(), model.feature_info.reduction()
    assert channels == [80, 160, 320, 640] and reduction == [4, 8, 16, 32]
    size = input_size(model, 96)
    with torch.no_grad():
        outs = model(torch.randn(1, *size))
    assert len(outs) == len(channels)
    for c, r, o in zip(channels, reduction, outs):
        assert o.shape[1] == c and o.shape[0] == 1 and not torch.isnan(o).any()
        assert o.shape[2] <= math.ceil(size[1] / r) + 1 and o.shape[3] <= math.ceil(size[2] / r) + 1
    assert "num_classes" not in model.pretrained_cfg and "classifier" not in model.pretrained_cfg


@pytest.mark.parametrize("feature_cls", ["getter", "dict", "hook"])
def test_model_forward_features_cls_and_out_indices(backend: Backend, feature_cls: str) -> None:
    """timm's ``feature_cls`` names and its int / negative ``out_indices`` forms (int n = the last n levels)."""
    torch.manual_seed(0)
    model = backend.create_model("ffnet_1", features_only=True, feature_cls=feature_cls, out_indices=2, **TINY).eval()
    assert model.feature_info.channels() == [64, 128] and model.feature_info.reduction() == [16, 32]
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    if feature_cls == "dict":
        assert list(outs) == ["-2", "-1"]  # timm's FeatureDictNet keys: the out_indices as given
        outs = list(outs.values())
    assert [tuple(o.shape) for o in outs] == [(1, 64, 4, 4), (1, 128, 2, 2)]
    neg = backend.create_model("ffnet_1", features_only=True, out_indices=(0, -1), **TINY)
    assert neg.feature_info.channels() == [16, 128] and len(neg.feature_info) == 4
    assert neg.feature_info.module_name() == ["stages.0", "stages.3"]


class _Wrapper(torch.nn.Module):
    """A features wrapper called the way timm's builder calls ``feature_cls`` classes."""

    def __init__(self, model: torch.nn.Module, out_indices: Any, flatten_sequential: bool = False) -> None:
        super().__init__()
        self.model, self.out_indices, self.flatten_sequential = model, out_indices, flatten_sequential

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.model.forward_intermediates(x, indices=list(self.out_indices), intermediates_only=True)


def test_feature_cls_as_a_class_and_feature_cfg(backend: Backend) -> None:
    """A wrapper class (timm's ``FeatureListNet`` with timm) gets the classifier and timm's keywords; timm's
    module-walking wrappers need ``flatten_sequential`` to reach ``stages.i``, which is set for them."""
    if backend.name == "timm":
        from timm.models._features import FeatureListNet as cls
    else:
        cls = _Wrapper
    torch.manual_seed(0)
    model = backend.create_model("ffnet_1", features_only=True, feature_cls=cls, out_indices=(1, 3), **TINY).eval()
    assert isinstance(model, cls) and "classifier" not in model.pretrained_cfg
    if cls is _Wrapper:
        assert model.flatten_sequential is True
    with torch.no_grad():
        assert [tuple(o.shape) for o in model(torch.randn(1, 3, 64, 64))] == [(1, 32, 8, 8), (1, 128, 2, 2)]
    as_dict = backend.create_model("ffnet_1", features_only=True, feature_cfg=dict(feature_cls="dict"), **TINY)
    assert list(as_dict.eval()(torch.randn(1, 3, 32, 32))) == ["0", "1", "2", "3"]


def test_model_forward_intermediates(backend: Backend) -> None:
    torch.manual_seed(0)
    model = backend.create_model("ffnet_1", pretrained=False).eval()
    info = backend.feature_info(model.feature_info, len(model.feature_info))
    channels, reduction = info.channels(), info.reduction()
    assert len(channels) >= 3
    size = input_size(model, 96)
    x = torch.randn(1, *size)
    with torch.no_grad():
        final, inter = model.forward_intermediates(x, output_fmt="NCHW")
        assert len(inter) == len(channels)
        for c, r, o in zip(channels, reduction, inter):
            assert o.shape[1] == c and o.shape[2] <= math.ceil(size[1] / r) + 1 and not torch.isnan(o).any()
        assert torch.allclose(final, model.forward_features(x))
        model.set_grad_checkpointing()
        assert torch.allclose(model.forward_intermediates(x)[0], final, rtol=1e-4, atol=1e-5)


# -------------------------------------------------------------------------- pretrained loading (timm rules)
def _weights_file(tmp_path: Path, **kw: Any) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(1)
    src = create_model("ffnet_1", **TINY, **kw).eval()
    path = tmp_path / "w.pth.tar"
    torch.save({"state_dict": src.state_dict()}, path)
    return path, src.state_dict()


def test_model_load_pretrained(backend: Backend, tmp_path: Path) -> None:
    """timm's test: pretrained=True with in_chans=1 and num_classes=5 / 0. The first conv is adapted (RGB
    kernels summed; repeated and scaled by 3/in_chans for more channels), the classifier dropped."""
    path, sd = _weights_file(tmp_path)
    overlay = dict(file=str(path))
    w = sd["patch_embed.0.c.weight"]
    grey = backend.create_model("ffnet_1", pretrained=True, in_chans=1, num_classes=5,
                                pretrained_cfg_overlay=overlay, **TINY).eval()
    got = grey.state_dict()
    assert torch.allclose(got["patch_embed.0.c.weight"], w.sum(1, keepdim=True))
    assert got["head.weight"].shape == (5, 128) and grey(torch.randn(1, 1, 32, 32)).shape == (1, 5)
    assert all(torch.equal(got[k], v) for k, v in sd.items() if not k.startswith(("head.", "patch_embed.0.c.")))
    backbone = backend.create_model("ffnet_1", pretrained=True, in_chans=1, num_classes=0,
                                    pretrained_cfg_overlay=overlay, **TINY).eval()
    assert backbone(torch.randn(1, 1, 32, 32)).shape == (1, 128)
    five = backend.create_model("ffnet_1", pretrained=True, in_chans=5, pretrained_cfg_overlay=overlay, **TINY)
    assert torch.allclose(five.state_dict()["patch_embed.0.c.weight"], torch.cat([w, w[:, :2]], 1) * 0.6)
    same = backend.create_model("ffnet_1", pretrained=True, pretrained_cfg_overlay=overlay, **TINY)
    assert all(torch.equal(same.state_dict()[k], v) for k, v in sd.items())  # 1000 classes: everything loads


def test_model_features_pretrained(backend: Backend, tmp_path: Path) -> None:
    path, sd = _weights_file(tmp_path)
    model = backend.create_model("ffnet_1", pretrained=True, features_only=True,
                                 pretrained_cfg_overlay=dict(file=str(path)), **TINY)
    got = model.state_dict()
    assert set(got) == {k for k in sd if not k.startswith(("head.", "norm."))}
    assert all(torch.equal(v, sd[k]) for k, v in got.items())


def test_pretrained_true_never_returns_random_weights(backend: Backend, tmp_path: Path) -> None:
    with pytest.raises(FFNetError, match=r"ffnet_1\.in1k: pretrained=True, but no FFNet weights are downloadable"):
        backend.create_model("ffnet_1", pretrained=True)
    with pytest.raises(FFNetError, match="https://example.org/ffnet_1.pth, which is not downloaded here"):
        backend.create_model("ffnet_1", pretrained=True, pretrained_cfg_overlay=dict(url="https://example.org/ffnet_1.pth"))
    with pytest.raises(FFNetError, match="pretrained file not found"):
        backend.create_model("ffnet_1", pretrained=True, pretrained_cfg_overlay=dict(file=str(tmp_path / "no.pth")))
    path, sd = _weights_file(tmp_path)
    # a full cfg dict (timm: it replaces the registered cfg), a tag, and an in-memory state_dict all resolve
    by_dict = backend.create_model("ffnet_1", pretrained=True, pretrained_cfg=dict(file=str(path), crop_pct=0.8), **TINY)
    assert by_dict.pretrained_cfg["crop_pct"] == 0.8 and by_dict.pretrained_cfg["file"] == str(path)
    assert torch.equal(by_dict.head.weight, sd["head.weight"])
    tagged = backend.create_model("ffnet_1.in1k_dist", pretrained=True, pretrained_cfg_overlay=dict(state_dict=sd),
                                  **TINY)
    assert tagged.pretrained_cfg["tag"] == "in1k_dist" and "state_dict" not in tagged.pretrained_cfg
    assert torch.equal(tagged.head.weight, sd["head.weight"])
    with pytest.raises(FFNetError, match="unknown field"):
        backend.create_model("ffnet_1", pretrained_cfg_overlay=dict(weights="x"))


# ------------------------------------------------------------------------------------ pooling, pruning
@pytest.mark.parametrize("pool", ["avg", "max", "avgmax", "catavgmax"])
def test_global_pool(backend: Backend, pool: str) -> None:
    torch.manual_seed(0)
    model = backend.create_model("ffnet_1", num_classes=7, global_pool=pool, **TINY).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        pre = model.forward_head(feats, pre_logits=True)
        avg, mx = feats.mean((2, 3)), feats.amax((2, 3))
        want = {"avg": avg, "max": mx, "avgmax": (avg + mx) / 2, "catavgmax": torch.cat([avg, mx], 1)}[pool]
        assert torch.allclose(pre, want) and pre.shape[1] == model.head_hidden_size
        assert model(x).shape == (2, 7)
        scripted = torch.jit.script(model)
        assert torch.allclose(scripted(x), model(x), atol=1e-6)
    assert model.head_hidden_size == (256 if pool == "catavgmax" else 128)
    model.reset_classifier(3, "avg")
    assert model.head.in_features == 128 and model(x).shape == (2, 3)


def test_global_pool_errors(backend: Backend) -> None:
    with pytest.raises(FFNetError, match="global_pool must be one of"):
        backend.create_model("ffnet_1", global_pool="gem", **TINY)
    with pytest.raises(FFNetError, match="pass num_classes=0"):
        backend.create_model("ffnet_1", global_pool="", **TINY)
    model = backend.create_model("ffnet_1", **TINY)
    with pytest.raises(ValueError, match="pass num_classes=0"):
        model.reset_classifier(5, "")


def test_prune_intermediate_layers(backend: Backend) -> None:
    """timm's backbone use: prune, then forward_intermediates (and forward) on what is left."""
    torch.manual_seed(0)
    model = backend.create_model("ffnet_1", **TINY).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        assert model.prune_intermediate_layers([0, 1]) == [0, 1]
        got = model.forward_intermediates(x, indices=[0, 1], intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(got, ref))
        out = model(x)
        assert out.shape == (1, 32, 8, 8) and torch.equal(out, ref[1]) and model.num_features == 32
        assert torch.equal(model.forward_features(x), ref[1])
        assert len(model.stages) == 2 and torch.jit.script(model)(x).shape == (1, 32, 8, 8)
    keep_head = backend.create_model("ffnet_1", **TINY).eval()
    with pytest.raises(ValueError, match="prune the head or keep the last stage"):
        keep_head.prune_intermediate_layers([0, 1], prune_head=False)
    assert keep_head.prune_intermediate_layers(1, prune_head=False) == [3]  # nothing dropped: the head stays
    assert keep_head(torch.randn(1, 3, 32, 32)).shape == (1, 1000)


# --------------------------------------------------------------------------------- checkpoints and EMA
def _run_checkpoint(tmp_path: Path) -> tuple[Path, FFNet, FFNet]:
    torch.manual_seed(2)
    model = create_model("ffnet_1", num_classes=4, **TINY)
    ema = create_model("ffnet_1", num_classes=4, **TINY)
    config = {"model": {"name": "ffnet_1", "spec": dict(TINY)}}
    path = save_checkpoint(tmp_path / "best.pth", model=model, ema=ema, step=3, config=config,
                           extra={"task": {"classes": ["a", "b", "c", "d"]}})
    return path, model, ema


def _equal(model: torch.nn.Module, ref: torch.nn.Module) -> bool:
    return all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))


def test_ema_weights_reach_timms_loader(backend: Backend, tmp_path: Path) -> None:
    """timm's ``load_checkpoint(use_ema=True)`` on a run checkpoint finds the engine's ``state_dict_ema`` alias
    and takes the EMA weights (``use_ema=False``: ``model``); the ``--formats timm`` export holds both too. ``pretrained=True`` with the run
    checkpoint as ``file`` reads our ``ema`` key itself."""
    from ffnet_classification.timm_checkpoint import write_timm_checkpoint

    path, model, ema = _run_checkpoint(tmp_path)
    plain = backend.create_model("ffnet_1", num_classes=4, **TINY)
    backend.load_checkpoint(plain, str(path), use_ema=True)
    assert _equal(plain, ema) and not _equal(plain, model)
    backend.load_checkpoint(plain, str(path), use_ema=False)
    assert _equal(plain, model)
    report = write_timm_checkpoint(path, tmp_path / "ffnet_1_timm.pth")
    assert report["has_ema"] and report["max_abs_diff"] == 0.0 and report["num_classes"] == 4
    saved = torch.load(tmp_path / "ffnet_1_timm.pth", weights_only=True)
    assert saved["arch"] == "ffnet_1" and saved["model_kwargs"] == TINY and saved["classes"] == ["a", "b", "c", "d"]
    for use_ema, ref in ((True, ema), (False, model)):
        m = backend.create_model(saved["arch"], num_classes=saved["num_classes"], **saved["model_kwargs"])
        backend.load_checkpoint(m, str(tmp_path / "ffnet_1_timm.pth"), use_ema=use_ema)
        assert _equal(m, ref)
    via_cfg = backend.create_model("ffnet_1", pretrained=True, num_classes=4, **TINY,
                                   pretrained_cfg_overlay=dict(file=str(path)))
    assert _equal(via_cfg, ema)


def test_checkpoint_path_of_timms_create_model_takes_the_ema_export(tmp_path: Path) -> None:
    from ffnet_classification.models.registry import load_model
    from ffnet_classification.timm_checkpoint import write_timm_checkpoint

    path, _, ema = _run_checkpoint(tmp_path)
    out = tmp_path / "t.pth"
    write_timm_checkpoint(path, out)
    model = timm_like_create_model("ffnet_1", num_classes=4, checkpoint_path=str(out), **TINY)
    assert _equal(model, ema)
    loaded = load_model(out, use_ema=True)  # our own tools read the export back, architecture included
    assert _equal(loaded.model, ema) and loaded.classes == ["a", "b", "c", "d"]
    fused_file = tmp_path / "fused.pth"
    torch.save({"state_dict": ema.fuse().state_dict()}, fused_file)
    with pytest.raises(FFNetError, match="fused .deploy. weights; timm.create_model builds the train form"):
        write_timm_checkpoint(fused_file, tmp_path / "x.pth", model_name="ffnet_1")


def test_export_cli_writes_the_timm_file(tmp_path: Path) -> None:
    path, _, ema = _run_checkpoint(tmp_path)
    out_dir = tmp_path / "exports"
    res = subprocess.run([sys.executable, "-m", "ffnet_classification.export", "--checkpoint", str(path),
                          "--output-dir", str(out_dir), "--formats", "timm"],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    saved = torch.load(out_dir / "ffnet_1_timm.pth", weights_only=True)
    assert all(torch.equal(saved["state_dict_ema"][k], v) for k, v in ema.state_dict().items())
    assert sorted(p.name for p in out_dir.iterdir()) == ["export.json", "ffnet_1_timm.pth"]


# ------------------------------------------------------------------------------- defaults and recipes
def test_defaults_are_timms_and_recipes_set_the_papers_drop_path(backend: Backend) -> None:
    model = backend.create_model("ffnet_1", **TINY)
    assert {m.p for m in model.modules() if isinstance(m, DropPath)} == {0.0}  # timm models default to 0
    recipes = {p.name: yaml.safe_load(p.read_text()) for p in RECIPES.glob("*.yaml")}
    for name, recipe in recipes.items():
        assert recipe["model"].get("drop_path_rate") is not None, f"{name} must set model.drop_path_rate"
    for name in ("ffnet_1", "ffnet_2", "ffnet_3", "ffnet_4"):
        assert recipes[f"{name}.yaml"]["model"]["drop_path_rate"] == PAPER_DROP_PATH[name]
    for name in ("ffnet_3", "ffnet_4"):
        assert recipes[f"{name}_384_ft.yaml"]["model"]["drop_path_rate"] == PAPER_DROP_PATH[f"{name}_384"]
    assert {n: recipes[f"{n}_kd.yaml"]["model"]["drop_path_rate"] for n in ("ffnet_1", "ffnet_2", "ffnet_3")} == \
        {"ffnet_1": 0.02, "ffnet_2": 0.08, "ffnet_3": 0.2}
    with torch.no_grad():  # fixed_input_size is False: any size runs
        assert model.eval()(torch.randn(1, 3, 72, 40)).shape == (1, 1000)


def test_every_registered_cfg_is_complete() -> None:
    """Each model and tag has a cfg with the fields timm's builder and data pipeline read, consistent with the
    model (pool_size = the feature map at input_size, on the meta device: no compute)."""
    assert sorted({k.split(".")[0] for k in DEFAULT_CFGS}) == list_models()
    for key in DEFAULT_CFGS:
        name, tag = key.split(".")
        cfg = resolve_pretrained_cfg(name, tag)
        for field in ("architecture", "tag", "num_classes", "input_size", "pool_size", "crop_pct", "crop_mode",
                      "interpolation", "mean", "std", "first_conv", "classifier", "fixed_input_size"):
            assert field in cfg, (key, field)
        assert (cfg["architecture"], cfg["tag"], cfg["fixed_input_size"]) == (name, tag, False)
        with torch.device("meta"):
            model = create_model(key).eval()
            feats = model.forward_features(torch.empty(1, *cfg["input_size"]))
        assert tuple(feats.shape[-2:]) == cfg["pool_size"] and model.pretrained_cfg == cfg
