"""Optional timm integration: make ``timm.create_model("ffnet_1")`` build our models.

timm is never imported by this package on its own (it is an optional extra, and importing it is slow and pulls
in torchvision). Registration happens when the user calls :func:`register_timm` or when ``timm`` is already
imported at the time ``ffnet_classification`` is imported.

Only timm's public API is used (timm >= 1.0: ``timm.models.register_model``, ``generate_default_cfgs``,
``is_model``, ``model_entrypoint``), never its private registry dicts, so a timm release that reorganizes
its internals does not break us. ``register_model`` reads a model's pretrained cfg from the attribute
``default_cfgs`` of the module the entrypoint belongs to (timm's convention for model files); this module
therefore sets ``default_cfgs`` before registering, and exposes each entrypoint as a module-level function
named like the model, as timm's own model modules do.
"""
from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from metamixer.train.errors import FFNetError

from .models.ffnet import PretrainedCfg as FFNetPretrainedCfg
from .models.registry import PRETRAINED_CFGS, list_models

__all__ = ["TIMM_PRETRAINED_CFG_FIELDS", "maybe_register_timm", "register_timm", "timm_pretrained_cfgs"]

#: the fields of timm 1.0's ``PretrainedCfg`` dataclass (``timm.models.PretrainedCfg``). It rejects unknown
#: keys with a TypeError, so the cfgs below are checked against this list in the tests, with or without timm.
TIMM_PRETRAINED_CFG_FIELDS = frozenset({
    "url", "file", "state_dict", "hf_hub_id", "hf_hub_filename", "source", "architecture", "tag", "custom_load",
    "input_size", "test_input_size", "min_input_size", "fixed_input_size", "interpolation", "crop_pct",
    "test_crop_pct", "crop_mode", "mean", "std", "num_classes", "label_offset", "label_names",
    "label_descriptions", "pool_size", "test_pool_size", "first_conv", "classifier", "license", "description",
    "origin_url", "paper_name", "paper_ids", "notes",
})

#: total stride of the network (stem /4, three downsamplers /2): the pooled feature map is input_size / 32
_STRIDE = 32

_REGISTERED = False

#: filled by :func:`register_timm` with ``timm.models.generate_default_cfgs(timm_pretrained_cfgs())``
default_cfgs: Mapping[str, Any] = {}


def timm_pretrained_cfgs() -> dict[str, dict[str, Any]]:
    """Each model's cfg in timm's ``PretrainedCfg`` field names, built from our own defaults (no timm needed).

    ``url`` and ``hf_hub_id`` are empty because no FFNet weights are published for download (the official
    ``url`` is empty too), so timm lists none of the models as pretrained. ``first_conv`` / ``classifier`` name
    modules of the train form, which is what ``timm.create_model`` builds (timm adapts their weights for
    ``in_chans`` / ``num_classes`` changes by these names).
    """
    out: dict[str, dict[str, Any]] = {}
    for name in list_models():
        ours = PRETRAINED_CFGS.get(name, FFNetPretrainedCfg())
        size = tuple(ours.input_size)
        out[name] = {
            "url": "",
            "hf_hub_id": "",
            "num_classes": ours.num_classes,
            "input_size": size,
            "pool_size": (size[1] // _STRIDE, size[2] // _STRIDE),
            "fixed_input_size": ours.fixed_input_size,
            "interpolation": ours.interpolation,
            "crop_pct": ours.crop_pct,
            "crop_mode": ours.crop_mode,
            "mean": tuple(ours.mean),
            "std": tuple(ours.std),
            "first_conv": ours.first_conv,
            "classifier": ours.classifier,
            "paper_name": "MetaMixer Is All You Need",
        }
    return out


def _weights_file(name: str, pretrained_cfg: Any, overlay: Mapping[str, Any]) -> str | None:
    """The local weights file timm's conventions point at: ``pretrained_cfg_overlay=dict(file=...)`` first,
    then a dict / ``PretrainedCfg`` passed as ``pretrained_cfg``. A tag (``"ffnet_1.in1k"``) names nothing."""
    if isinstance(pretrained_cfg, str) and pretrained_cfg:
        raise FFNetError(f"{name}: no pretrained tag {pretrained_cfg!r} (no FFNet weights are downloadable); "
                         "pass pretrained=True, pretrained_cfg_overlay=dict(file='<path to .pth.tar>')")
    cfg_file = (pretrained_cfg.get("file") if isinstance(pretrained_cfg, Mapping)
                else getattr(pretrained_cfg, "file", None))
    return overlay.get("file") or cfg_file or None


def _make_entrypoint(name: str) -> Callable[..., nn.Module]:
    """A timm model entrypoint for ``name``: timm registers it under its ``__name__`` and calls it with
    ``pretrained``, ``pretrained_cfg``, ``pretrained_cfg_overlay`` (newer 1.0.x also ``cache_dir``) and the
    user's keyword arguments; ``checkpoint_path`` is loaded by timm itself after the call."""

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        from .models.registry import create_model

        pretrained_cfg = kwargs.pop("pretrained_cfg", None)
        overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
        kwargs.pop("cache_dir", None)  # timm's hub cache: nothing is downloaded for FFNet
        path = _weights_file(name, pretrained_cfg, overlay)
        if pretrained and not path:
            raise FFNetError(f"timm.create_model({name!r}, pretrained=True): no FFNet weights are downloadable; "
                             "add pretrained_cfg_overlay=dict(file='<official .pth.tar or our checkpoint>')")
        # as in timm, a file is only loaded with pretrained=True
        model = create_model(name, pretrained=path if pretrained else None, **kwargs)
        model.pretrained_cfg.update(overlay)  # timm semantics: the overlay replaces those cfg values
        return model

    entrypoint.__name__ = name
    entrypoint.__qualname__ = name
    entrypoint.__module__ = __name__
    entrypoint.__doc__ = f"{name} (ffnet_classification), built by ffnet_classification.create_model."
    return entrypoint


def register_timm(force: bool = False) -> bool:
    """Register every FFNet name with timm; returns False when timm is not installed. Idempotent.

    A name timm already knows from another module is left alone (with a warning) unless ``force=True``.
    """
    global _REGISTERED, default_cfgs
    if _REGISTERED and not force:
        return True
    try:
        from timm.models import generate_default_cfgs, is_model, model_entrypoint, register_model
    except ImportError:
        return False
    default_cfgs = generate_default_cfgs(timm_pretrained_cfgs())
    module = sys.modules[__name__]
    for name in list_models():
        if is_model(name):
            owner = getattr(model_entrypoint(name), "__module__", "?")
            if owner == __name__:
                continue  # ours already
            if not force:
                warnings.warn(f"timm already has a model named {name!r} (from {owner}); kept it. "
                              "ffnet_classification.register_timm(force=True) replaces it with FFNet", stacklevel=2)
                continue
        entrypoint = _make_entrypoint(name)
        setattr(module, name, entrypoint)  # register_model lists it in this module's __all__
        register_model(entrypoint)
    _REGISTERED = True
    return True


def maybe_register_timm() -> None:
    """Register only if the user already imported timm (never import it ourselves)."""
    if "timm" in sys.modules:
        try:
            register_timm()
        except Exception as exc:  # noqa: BLE001 - a timm API change must not break importing our package
            warnings.warn(f"ffnet_classification: registering the FFNet models with timm failed ({exc!r}); "
                          "ffnet_classification.register_timm() raises the full error", stacklevel=2)
