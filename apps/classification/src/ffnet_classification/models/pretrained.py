"""Pretrained cfgs (timm's ``default_cfgs``, one per model and tag) and timm's rules for resolving them.

Every variant has registered cfgs with timm's complete field set: ``ffnet_1.in1k`` (the official ImageNet-1k
run) and, where the authors trained one, ``ffnet_N.in1k_dist`` (DeiT hard distillation). No FFNet weights are
published for download (the official ``url`` is empty), so no cfg names a ``url`` / ``hf_hub_id``; weights are
loaded from a local ``file`` (or an in-memory ``state_dict``) given through ``pretrained_cfg_overlay`` or a
``pretrained_cfg`` dict, as timm's builder resolves them. ``pretrained=True`` without one raises (never random
weights).

Resolution follows ``timm.models.resolve_pretrained_cfg``: a tag (``"ffnet_1.in1k_dist"`` or
``pretrained_cfg="in1k_dist"``) picks a registered cfg, a dict replaces it, then ``pretrained_cfg_overlay``
replaces single fields; ``architecture`` and ``tag`` are filled in.
"""
from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Mapping
from typing import Any

import torch

from metamixer.train.errors import FFNetError

from .ffnet import PRETRAINED_CFG_FIELDS, PretrainedCfg

__all__ = ["DEFAULT_CFGS", "TAGS", "adapt_input_conv", "default_tag", "resolve_pretrained_cfg", "split_model_name_tag",
           "weights_source"]

_PAPER = "FFNet: MetaMixer-based Efficient Convolutional Mixer Design"
_ORIGIN = "https://github.com/ysj9909/FFNet"
_NOTE = ("no FFNet weights are downloadable (the authors publish no url); load a local file with "
         "pretrained=True, pretrained_cfg_overlay=dict(file='<official .pth.tar, our checkpoint or timm export>')",)
#: total stride (stem /4, three downsamplers /2): the pooled map of an input of size S is S / 32
STRIDE = 32

#: (model, tag) -> (crop_pct, input size, description); README top-1 where the authors report one
_RUNS: dict[str, dict[str, tuple[float, int, str]]] = {
    "ffnet_1": {"in1k": (0.9, 256, "ImageNet-1k, 300 epochs (README top-1 81.3)"),
                "in1k_dist": (0.9, 256, "ImageNet-1k, DeiT hard distillation from RegNetY-16GF (README top-1 82.1)")},
    "ffnet_2": {"in1k": (0.9, 256, "ImageNet-1k, 300 epochs (README top-1 82.9)"),
                "in1k_dist": (0.9, 256, "ImageNet-1k, DeiT hard distillation from RegNetY-16GF (README top-1 83.7)")},
    "ffnet_3": {"in1k": (0.95, 256, "ImageNet-1k, 300 epochs (README top-1 83.9)"),
                "in1k_dist": (0.95, 256, "ImageNet-1k, DeiT hard distillation from RegNetY-16GF (README top-1 84.5)")},
    "ffnet_4": {"in1k": (0.95, 256, "ImageNet-1k, 300 epochs at 256 px (no README top-1: it reports 384 px)")},
    "ffnet_3_384": {"in1k": (1.0, 384, "ImageNet-1k, fine-tuned 30 epochs at 384 px (README top-1 84.5)")},
    "ffnet_4_384": {"in1k": (1.0, 384, "ImageNet-1k, fine-tuned 30 epochs at 384 px (README top-1 85.3)")},
}


def _cfg(name: str, tag: str, crop_pct: float, size: int, description: str) -> PretrainedCfg:
    return PretrainedCfg(
        architecture=name, tag=tag, input_size=(3, size, size), pool_size=(size // STRIDE, size // STRIDE),
        crop_pct=crop_pct, description=description, origin_url=_ORIGIN, paper_name=_PAPER, notes=_NOTE,
    )


#: ``"model.tag"`` -> cfg, the first tag of each model is its default (timm's ``default_cfgs`` layout)
DEFAULT_CFGS: dict[str, PretrainedCfg] = {
    f"{name}.{tag}": _cfg(name, tag, *run) for name, runs in _RUNS.items() for tag, run in runs.items()
}
#: model -> its tags, default first
TAGS: dict[str, tuple[str, ...]] = {name: tuple(runs) for name, runs in _RUNS.items()}


def split_model_name_tag(name: str) -> tuple[str, str]:
    """``"ffnet_1.in1k"`` -> ``("ffnet_1", "in1k")``; no tag -> ``""`` (timm's convention)."""
    model, _, tag = name.partition(".")
    return model, tag


def default_tag(model: str) -> str:
    return TAGS[model][0] if model in TAGS else ""


def _as_mapping(cfg: Any, where: str) -> dict[str, Any]:
    if isinstance(cfg, PretrainedCfg):
        return dataclasses.asdict(cfg)
    if dataclasses.is_dataclass(cfg) and not isinstance(cfg, type):  # timm's own PretrainedCfg
        return {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise FFNetError(f"{where} must be a dict (or a timm PretrainedCfg), got {type(cfg).__name__}")


def resolve_pretrained_cfg(model: str, tag: str = "", pretrained_cfg: Any = None,
                           overlay: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The cfg a model of ``model`` gets, in timm's dict form (``PretrainedCfg.to_dict()``).

    ``pretrained_cfg``: ``None`` (the tag's registered cfg, else the model's default), a tag string, or a dict /
    ``PretrainedCfg`` (it replaces the registered cfg, as in timm). ``overlay`` replaces single fields.
    Unknown fields are refused, naming them (timm's ``PretrainedCfg`` raises a TypeError for them).
    """
    if isinstance(pretrained_cfg, str):
        tag = tag or pretrained_cfg
        pretrained_cfg = None
    if pretrained_cfg is None:
        tag = tag or default_tag(model)
        key = f"{model}.{tag}"
        if key in DEFAULT_CFGS:
            base = DEFAULT_CFGS[key]
        elif model in TAGS:
            raise FFNetError(f"{model}: no pretrained tag {tag!r}; registered: "
                             f"{', '.join(f'{model}.{t}' for t in TAGS[model])}")
        else:  # a custom name: the 256-px ImageNet defaults
            base = PretrainedCfg(pool_size=(256 // STRIDE, 256 // STRIDE), paper_name=_PAPER, origin_url=_ORIGIN)
        fields = dataclasses.asdict(base)
    else:
        fields = dataclasses.asdict(PretrainedCfg())
        given = _as_mapping(pretrained_cfg, "pretrained_cfg")
        _check_fields(given, "pretrained_cfg")
        fields.update(given)
    extra = dict(overlay or {})
    _check_fields(extra, "pretrained_cfg_overlay")
    if not fields.get("architecture"):
        extra.setdefault("architecture", model)
    fields.update(extra)
    return PretrainedCfg(**fields).to_dict()


def _check_fields(cfg: Mapping[str, Any], where: str) -> None:
    unknown = sorted(set(cfg) - set(PRETRAINED_CFG_FIELDS))
    if unknown:
        raise FFNetError(f"{where}: unknown field(s) {', '.join(unknown)}; timm's PretrainedCfg fields are "
                         f"{', '.join(PRETRAINED_CFG_FIELDS)}")


def weights_source(cfg: Mapping[str, Any]) -> tuple[str, Any]:
    """Where ``pretrained=True`` takes the weights from: ``("state_dict", dict)`` or ``("file", path)``, in
    timm's priority (in-memory state_dict, then file). A cfg with only a ``url`` / ``hf_hub_id`` or nothing at
    all raises a clear error (nothing is downloaded here; random weights are never returned silently)."""
    name = cfg.get("architecture") or "this model"
    label = f"{name}.{cfg['tag']}" if cfg.get("tag") else name
    if cfg.get("state_dict") is not None:
        return "state_dict", cfg["state_dict"]
    if cfg.get("file"):
        path = os.fspath(cfg["file"])
        if not os.path.isfile(path):
            raise FFNetError(f"{label}: pretrained file not found: {path}")
        return "file", path
    remote = cfg.get("url") or cfg.get("hf_hub_id")
    if remote:
        raise FFNetError(f"{label}: the weights are at {remote}, which is not downloaded here; download the file "
                         "and pass pretrained_cfg_overlay=dict(file='<path>')")
    raise FFNetError(f"{label}: pretrained=True, but no FFNet weights are downloadable; pass a local file with "
                     "pretrained_cfg_overlay=dict(file='<official .pth.tar, our checkpoint or timm export>') "
                     "(or pretrained='<path>' to ffnet_classification.create_model)")


@torch.no_grad()
def adapt_input_conv(in_chans: int, weight: torch.Tensor) -> torch.Tensor:
    """A first-conv weight trained on RGB, made to take ``in_chans`` channels (timm's rule).

    One channel: the RGB kernels summed (a grey image gives the response the RGB kernels give it). Otherwise the
    RGB kernels repeated to ``in_chans`` and scaled by 3 / ``in_chans``, which keeps the response to an input
    whose channels are equal. Other source layouts raise ``NotImplementedError``.
    """
    dtype = weight.dtype
    w = weight.float()
    have = w.shape[1]
    if in_chans == have:
        return weight
    if in_chans == 1 and have == 3:
        w = w.sum(dim=1, keepdim=True)
    elif have == 3:
        w = w.repeat(1, math.ceil(in_chans / 3), 1, 1)[:, :in_chans] * (3.0 / in_chans)
    else:
        raise NotImplementedError(f"cannot adapt a {have}-channel first conv to {in_chans} channels")
    return w.to(dtype)
