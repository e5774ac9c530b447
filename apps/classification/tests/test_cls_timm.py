"""timm integration: the pretrained cfgs we hand to timm, and registration through timm's public API.

timm is optional (and not importable on every machine), so the cfgs are checked against the models without it,
and the registration protocol (module ``default_cfgs`` + ``register_model`` + entrypoint keyword arguments) is
exercised against a stand-in ``timm.models`` that behaves as timm 1.0 documents; the last test runs the real
timm when it is installed.
"""
from __future__ import annotations

import sys
import types
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from ffnet_classification import create_model, list_models
from ffnet_classification import timm_registry as reg
from ffnet_classification.models import FFNet
from ffnet_classification.models.registry import PRETRAINED_CFGS
from metamixer.train.errors import FFNetError

TINY = dict(widths=[16, 32, 64, 128], depths=[1, 1, 1, 1], stem_dim=8)


def test_timm_cfgs_use_timm_fields_and_name_real_modules() -> None:
    cfgs = reg.timm_pretrained_cfgs()
    assert sorted({k.split(".")[0] for k in cfgs}) == list_models() and len(cfgs) == 9
    assert [k for k in cfgs if k.startswith("ffnet_1.")] == ["ffnet_1.in1k", "ffnet_1.in1k_dist"]  # default first
    for key, cfg in cfgs.items():
        name = key.split(".")[0]
        assert set(cfg) <= reg.TIMM_PRETRAINED_CFG_FIELDS, (key, set(cfg) - reg.TIMM_PRETRAINED_CFG_FIELDS)
        assert not {"url", "hf_hub_id", "file", "state_dict"} & set(cfg)  # nothing downloadable
        assert cfg["fixed_input_size"] is False and cfg["interpolation"] == "bicubic"
        ours = PRETRAINED_CFGS[name]
        assert cfg["input_size"] == ours.input_size and cfg["crop_pct"] == ours.crop_pct
        assert cfg["mean"] == ours.mean and cfg["std"] == ours.std
        with torch.device("meta"):
            model = create_model(name).eval()
        modules = dict(model.named_modules())
        first, head = modules[cfg["first_conv"]], modules[cfg["classifier"]]
        assert isinstance(first, torch.nn.Conv2d) and first.in_channels == cfg["input_size"][0]
        assert isinstance(head, torch.nn.Linear) and head.out_features == cfg["num_classes"] == 1000
        keys = set(model.state_dict())
        assert {f"{cfg['first_conv']}.weight", f"{cfg['classifier']}.weight", f"{cfg['classifier']}.bias"} <= keys
        feats = model.forward_features(torch.empty(1, *cfg["input_size"], device="meta"))
        assert tuple(feats.shape[-2:]) == cfg["pool_size"]
    assert cfgs["ffnet_1.in1k"]["input_size"] == (3, 256, 256) and cfgs["ffnet_4_384.in1k"]["input_size"] == (3, 384, 384)
    assert cfgs["ffnet_3.in1k"]["crop_pct"] == 0.95 and cfgs["ffnet_3_384.in1k"]["crop_pct"] == 1.0


def test_register_timm_is_false_without_timm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm...` raise ImportError
    monkeypatch.setitem(sys.modules, "timm.models", None)
    monkeypatch.setattr(reg, "_REGISTERED", False)
    assert reg.register_timm() is False


def _stand_in_timm() -> tuple[types.ModuleType, dict[str, Callable[..., Any]], dict[str, dict[str, Any]]]:
    """The slice of timm 1.0's public registry API that register_timm uses, with its documented behaviour:
    PretrainedCfg rejects unknown fields; generate_default_cfgs groups "model.tag" keys per model (first tag =
    default); register_model reads ``default_cfgs[fn.__name__]`` of the entrypoint's module and fills in
    ``architecture`` / ``tag``; create_model drops None kwargs, turns a name's tag into ``pretrained_cfg`` and
    passes pretrained / pretrained_cfg / pretrained_cfg_overlay / cache_dir."""
    entrypoints: dict[str, Callable[..., Any]] = {}
    registered_cfgs: dict[str, dict[str, Any]] = {}

    def generate_default_cfgs(cfgs: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for key, cfg in cfgs.items():
            unknown = set(cfg) - reg.TIMM_PRETRAINED_CFG_FIELDS
            if unknown:
                raise TypeError(f"PretrainedCfg got unexpected keys {unknown} for {key}")
            model, _, tag = key.partition(".")
            entry = out.setdefault(model, {"tags": [], "cfgs": {}})
            entry["tags"].append(tag)
            entry["cfgs"][tag] = dict(cfg)
        return out

    def register_model(fn: Callable[..., Any]) -> Callable[..., Any]:
        entrypoints[fn.__name__] = fn
        entry = sys.modules[fn.__module__].default_cfgs[fn.__name__]
        for i, tag in enumerate(entry["tags"]):
            cfg = dict(entry["cfgs"][tag], architecture=fn.__name__, tag=tag)
            registered_cfgs[f"{fn.__name__}.{tag}"] = cfg
            if i == 0:
                registered_cfgs[fn.__name__] = cfg
        return fn

    def create_model(name: str, pretrained: bool = False, pretrained_cfg: Any = None,
                     pretrained_cfg_overlay: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
        model, _, tag = name.partition(".")
        if tag and not pretrained_cfg:
            pretrained_cfg = tag
        return entrypoints[model](pretrained=pretrained, pretrained_cfg=pretrained_cfg,
                                  pretrained_cfg_overlay=pretrained_cfg_overlay, cache_dir=None, **kwargs)

    models = types.ModuleType("timm.models")
    models.generate_default_cfgs = generate_default_cfgs
    models.register_model = register_model
    models.is_model = lambda name: name.split(".")[0] in entrypoints
    models.model_entrypoint = lambda name: entrypoints[name.split(".")[0]]
    models.create_model = create_model
    return models, entrypoints, registered_cfgs


@pytest.fixture
def clean_registration() -> Iterator[None]:
    """register_timm sets module attributes; undo them so the real-timm test starts from scratch."""
    saved = (reg._REGISTERED, reg.default_cfgs)
    reg._REGISTERED = False
    try:
        yield
    finally:
        reg._REGISTERED, reg.default_cfgs = saved
        for name in list_models():
            reg.__dict__.pop(name, None)


def test_registration_protocol_and_entrypoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              clean_registration: None) -> None:
    models, entrypoints, registered = _stand_in_timm()

    def someone_elses_ffnet_2(pretrained: bool = False, **kwargs: Any) -> None:
        return None

    someone_elses_ffnet_2.__name__ = "ffnet_2"
    entrypoints["ffnet_2"] = someone_elses_ffnet_2
    monkeypatch.setitem(sys.modules, "timm", types.ModuleType("timm"))
    monkeypatch.setitem(sys.modules, "timm.models", models)
    with pytest.warns(UserWarning, match="timm already has a model named 'ffnet_2'"):
        assert reg.register_timm()
    assert set(entrypoints) == set(list_models()) and entrypoints["ffnet_2"] is someone_elses_ffnet_2
    assert registered["ffnet_3_384"]["input_size"] == (3, 384, 384) and "ffnet_2" not in registered
    assert registered["ffnet_1"]["tag"] == "in1k" and registered["ffnet_1.in1k_dist"]["architecture"] == "ffnet_1"
    assert reg.ffnet_1 is entrypoints["ffnet_1"] and reg.ffnet_1.__module__ == reg.__name__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert reg.register_timm()  # idempotent, silent
    assert reg.register_timm(force=True) and entrypoints["ffnet_2"] is reg.ffnet_2

    torch.manual_seed(0)
    src = create_model("ffnet_1", num_classes=3, **TINY)
    ema = create_model("ffnet_1", num_classes=3, **TINY)
    torch.save({"state_dict": src.state_dict(), "state_dict_ema": ema.state_dict()}, tmp_path / "w.pth")
    built = models.create_model("ffnet_1", num_classes=3, drop_path_rate=None, **TINY)
    assert isinstance(built, FFNet) and built.num_classes == 3
    assert not torch.equal(built.head.weight, src.head.weight)  # pretrained=False: a file is not loaded
    loaded = models.create_model("ffnet_1.in1k_dist", pretrained=True, num_classes=3, **TINY,
                                 pretrained_cfg_overlay={"file": str(tmp_path / "w.pth"), "crop_pct": 1.0})
    # timm's loader takes the EMA weights when the file has them
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), ema.state_dict().values()))
    cfg = loaded.pretrained_cfg
    assert cfg["crop_pct"] == 1.0 and cfg["file"] == str(tmp_path / "w.pth")
    assert cfg["architecture"] == "ffnet_1" and cfg["tag"] == "in1k_dist" and "DeiT" in cfg["description"]
    with pytest.raises(FFNetError, match="no FFNet weights are downloadable"):
        models.create_model("ffnet_1", pretrained=True)
    with pytest.raises(FFNetError, match="no pretrained tag 'in21k'"):
        models.create_model("ffnet_1.in21k", pretrained=True)


def test_timm_registration_when_installed(tmp_path: Path, clean_registration: None) -> None:
    timm = pytest.importorskip("timm")
    from timm.data import resolve_model_data_config
    from timm.models import PretrainedCfg, get_pretrained_cfg, get_pretrained_cfg_value

    from ffnet_classification import register_timm

    assert register_timm()
    assert set(list_models()) <= set(timm.list_models("ffnet*"))
    assert "ffnet_1.in1k_dist" in timm.list_models("ffnet_1*", include_tags=True)
    assert not timm.list_models("ffnet*", pretrained=True)  # nothing downloadable
    for key, cfg in reg.timm_pretrained_cfgs().items():
        PretrainedCfg(**cfg)  # every key is a timm field
        assert get_pretrained_cfg(key).input_size == cfg["input_size"]
    assert get_pretrained_cfg_value("ffnet_1", "pool_size") == (8, 8)
    assert get_pretrained_cfg("ffnet_1").architecture == "ffnet_1" and get_pretrained_cfg("ffnet_1").tag == "in1k"
    model = timm.create_model("ffnet_1", num_classes=10, pretrained=False, **TINY)
    assert isinstance(model, FFNet) and model.num_classes == 10
    data_cfg = resolve_model_data_config(model)
    assert data_cfg["input_size"] == (3, 256, 256) and data_cfg["crop_pct"] == 0.9
    torch.save(model.state_dict(), tmp_path / "w.pth")
    again = timm.create_model("ffnet_1", num_classes=10, pretrained=True, **TINY,
                              pretrained_cfg_overlay=dict(file=str(tmp_path / "w.pth")))
    assert torch.equal(again.head.weight, model.head.weight)
