"""Optional timm integration: make ``timm.create_model("ffnet_1")`` build our models.

timm is never imported by this package on its own. Registration happens when the user calls
:func:`register_timm` or when ``timm`` is already imported at the time ``ffnet_classification`` is imported.
"""
from __future__ import annotations

import sys
from typing import Any

_REGISTERED = False


def _make_entrypoint(name: str):  # noqa: ANN202 - timm inspects the function itself
    def entrypoint(pretrained: bool = False, **kwargs: Any):  # noqa: ANN202
        from .models.registry import create_model

        checkpoint = kwargs.pop("pretrained_cfg_overlay", None) or {}
        path = kwargs.pop("checkpoint_path", None) or checkpoint.get("file")
        for internal in ("pretrained_cfg", "cache_dir", "pretrained_strict"):  # timm-side options
            kwargs.pop(internal, None)
        return create_model(name, pretrained=path if (pretrained or path) else None, **kwargs)

    entrypoint.__name__ = name
    entrypoint.__qualname__ = name
    entrypoint.__module__ = "ffnet_classification.timm_registry"
    return entrypoint


def register_timm(force: bool = False) -> bool:
    """Register every FFNet name with timm; returns False when timm is not installed. Idempotent."""
    global _REGISTERED
    if _REGISTERED and not force:
        return True
    try:
        from timm.models import register_model
        from timm.models._registry import _model_entrypoints  # type: ignore[attr-defined]
    except ImportError:
        return False
    from .models.registry import list_models

    for name in list_models():
        if name in _model_entrypoints and not force:
            continue
        register_model(_make_entrypoint(name))
    _REGISTERED = True
    return True


def maybe_register_timm() -> None:
    """Register only if the user already imported timm (never import it ourselves)."""
    if "timm" in sys.modules:
        try:
            register_timm()
        except Exception:  # noqa: BLE001 - a timm API change must not break importing our package
            pass
