"""Optional timm integration: make ``timm.create_model("ffnet_1")`` build our models.

timm is never imported by this package on its own (it is an optional extra, and importing it is slow and pulls
in torchvision). Registration happens when the user calls :func:`register_timm` or when ``timm`` is already
imported at the time ``ffnet_classification`` is imported.

Only timm's public API is used (timm >= 1.0: ``timm.models.register_model``, ``generate_default_cfgs``,
``is_model``, ``model_entrypoint``), never its private registry dicts. ``register_model`` reads a model's
pretrained cfgs from the attribute ``default_cfgs`` of the module the entrypoint belongs to (timm's convention
for model files), keyed by model name, each entry holding the model's tags (``ffnet_1.in1k``,
``ffnet_1.in1k_dist``); this module therefore sets ``default_cfgs`` before registering and exposes each
entrypoint as a module-level function named like the model, as timm's own model modules do.

The entrypoints hand everything timm passes (``pretrained``, ``pretrained_cfg`` — a tag or a dict —,
``pretrained_cfg_overlay``, ``features_only``, ``out_indices``, ``feature_cls``, ``feature_cfg``,
``global_pool``, ``in_chans``, ``num_classes``, ...) to :func:`ffnet_classification.create_model`, which
implements timm's builder semantics (cfg resolution, classifier / first-conv adaptation, feature backbones), so
a model built through timm and one built directly are the same.
"""
from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from torch import nn

from .models.ffnet import PRETRAINED_CFG_FIELDS
from .models.pretrained import DEFAULT_CFGS
from .models.registry import list_models

__all__ = ["TIMM_PRETRAINED_CFG_FIELDS", "maybe_register_timm", "register_timm", "timm_pretrained_cfgs"]

#: the fields of timm 1.0's ``PretrainedCfg`` dataclass (``timm.models.PretrainedCfg``), which rejects any
#: other key with a TypeError; our ``PretrainedCfg`` has exactly these
TIMM_PRETRAINED_CFG_FIELDS = frozenset(PRETRAINED_CFG_FIELDS)

#: keyword arguments of timm's ``create_model`` / builder that mean nothing for FFNet (nothing is downloaded,
#: nothing is cached; ``pretrained_strict`` is ours always: only timm's adaptations relax it)
_IGNORED_KWARGS = ("cache_dir", "pretrained_strict")

_REGISTERED = False

#: filled by :func:`register_timm` with ``timm.models.generate_default_cfgs(timm_pretrained_cfgs())``
default_cfgs: Mapping[str, Any] = {}


def timm_pretrained_cfgs() -> dict[str, dict[str, Any]]:
    """``"model.tag"`` -> cfg dict in timm's ``PretrainedCfg`` fields (no timm needed), the input of timm's
    ``generate_default_cfgs``; each model's first tag is its default. ``architecture`` / ``tag`` are left for
    ``register_model`` to fill in, as timm's own cfgs do; nothing names a ``url`` (none is published)."""
    out: dict[str, dict[str, Any]] = {}
    for key, cfg in DEFAULT_CFGS.items():
        d = {k: v for k, v in asdict(cfg).items() if v is not None and k not in ("architecture", "tag")}
        out[key] = d
    return out


def _make_entrypoint(name: str) -> Callable[..., nn.Module]:
    """A timm model entrypoint for ``name``: timm registers it under its ``__name__`` and calls it with
    ``pretrained``, ``pretrained_cfg`` (the tag of ``"ffnet_1.tag"``, or a dict), ``pretrained_cfg_overlay``
    (newer 1.0.x also ``cache_dir``) and the user's keyword arguments with ``None`` values removed;
    ``checkpoint_path`` is loaded by timm itself after the call (its ``load_checkpoint``)."""

    def entrypoint(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        from .models.registry import create_model

        for key in _IGNORED_KWARGS:
            kwargs.pop(key, None)
        return create_model(name, pretrained=bool(pretrained), **kwargs)

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
