"""Model registry: ``create_model(name, input_size=32, in_channels=4, num_classes=1000, **overrides)``.

Sizes follow U-DiT's published S / B / L (hidden 96 / 192 / 384, heads 4 / 8 / 16, depths [2, 5, 8, 5, 2],
FFN ratio 2). ``u_ffnet_*`` use FFNified attention in the encoder/decoder levels and attention in the
bottleneck (FFNet paper §4.4); ``u_dit_*`` use attention everywhere (the baseline). ``tiny`` variants are
CPU-sized for tests and the digits quick start.
"""

from __future__ import annotations

from typing import Any

from metamixer.train.errors import FFNetError

from .unet import TOKEN_MIXERS, DiffusionBlock, UShapedDiffusionTransformer

__all__ = ["create_model", "list_models", "model_kwargs", "UShapedDiffusionTransformer", "DiffusionBlock",
           "TOKEN_MIXERS"]

HYBRID = ("ffnified", "ffnified", "attention", "ffnified", "ffnified")
ALL_ATTENTION = ("attention",) * 5

_SIZES: dict[str, dict[str, Any]] = {
    "s": dict(hidden=96, num_heads=4, depths=(2, 5, 8, 5, 2)),
    "b": dict(hidden=192, num_heads=8, depths=(2, 5, 8, 5, 2)),
    "l": dict(hidden=384, num_heads=16, depths=(2, 5, 8, 5, 2)),
    # CPU-sized (not a published size): quick start and tests
    "tiny": dict(hidden=32, num_heads=2, depths=(1, 1, 2, 1, 1), sub_blocks=1),
}
_FAMILIES = {"u_ffnet": HYBRID, "u_dit": ALL_ATTENTION}


def list_models() -> list[str]:
    return [f"{family}_{size}" for family in _FAMILIES for size in _SIZES]


def model_kwargs(name: str) -> dict[str, Any]:
    """Constructor arguments of a registered name (what ``create_model`` passes before overrides)."""
    family, _, size = name.rpartition("_")
    if family not in _FAMILIES or size not in _SIZES:
        raise FFNetError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return dict(_SIZES[size], token_mixers=_FAMILIES[family])


def create_model(name: str, input_size: int = 32, in_channels: int = 4, num_classes: int = 1000,
                 **overrides: Any) -> UShapedDiffusionTransformer:
    """Build a registered model; ``overrides`` replace any constructor argument (e.g. ``token_mixers``)."""
    kwargs = model_kwargs(name)
    kwargs.update(overrides)
    return UShapedDiffusionTransformer(input_size=input_size, in_channels=in_channels,
                                       num_classes=num_classes, **kwargs)
