"""Model registry: ``create_model(name, input_size=32, in_channels=4, num_classes=1000, **overrides)``.

Sizes follow U-DiT's published S / B / L (hidden 96 / 192 / 384, heads 4 / 8 / 16, depths [2, 5, 8, 5, 2],
FFN ratio 2). Families (FFNet paper §4.4; the reasoning and the cost of each reading: docs/generation.md §1):

* ``u_ffnet_*``: the encoder/decoder (mixer + FFN) pairs are FFNet blocks — FFNified attention as token mixer
  and FFNet's channel mixer (DW 7x7 + FFN, expansion 3) — and the bottleneck keeps U-DiT's blocks (attention +
  U-DiT's FFN). U-FFNet-B: 19.52 G MACs deploy form (paper: 19.6 G).
* ``u_ffnet_*_literal``: only the attention is replaced (U-DiT's FFN everywhere); 16.51 G for B.
* ``u_dit_*``: attention everywhere (the baseline; U-DiT-B 22.18 G, published 22.2 G).

``tiny`` variants are CPU-sized for tests and the digits quick start; their class-embedding init is std 1.0
instead of DiT's 0.02 (short runs; see docs/generation.md §4).
"""

from __future__ import annotations

from typing import Any

from metamixer.train.errors import FFNetError

from .unet import CHANNEL_MIXERS, TOKEN_MIXERS, DiffusionBlock, UShapedDiffusionTransformer

__all__ = ["create_model", "list_models", "model_kwargs", "UShapedDiffusionTransformer", "DiffusionBlock",
           "TOKEN_MIXERS", "CHANNEL_MIXERS"]

HYBRID = ("ffnified", "ffnified", "attention", "ffnified", "ffnified")
ALL_ATTENTION = ("attention",) * 5
FFNET_CHANNEL = ("convnext", "convnext", "udit", "convnext", "convnext")
UDIT_CHANNEL = ("udit",) * 5

_SIZES: dict[str, dict[str, Any]] = {
    "s": dict(hidden=96, num_heads=4, depths=(2, 5, 8, 5, 2)),
    "b": dict(hidden=192, num_heads=8, depths=(2, 5, 8, 5, 2)),
    "l": dict(hidden=384, num_heads=16, depths=(2, 5, 8, 5, 2)),
    # CPU-sized (not a published size): quick start and tests
    "tiny": dict(hidden=32, num_heads=2, depths=(1, 1, 2, 1, 1), sub_blocks=1, label_init_std=1.0),
}
#: family -> (name pattern, per-level token mixers, per-level channel mixers)
_FAMILIES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "u_ffnet": ("u_ffnet_{}", HYBRID, FFNET_CHANNEL),
    "u_ffnet_literal": ("u_ffnet_{}_literal", HYBRID, UDIT_CHANNEL),
    "u_dit": ("u_dit_{}", ALL_ATTENTION, UDIT_CHANNEL),
}
_NAMES = {pattern.format(size): (family, size) for family, (pattern, _, _) in _FAMILIES.items() for size in _SIZES}


def list_models() -> list[str]:
    return list(_NAMES)


def model_kwargs(name: str) -> dict[str, Any]:
    """Constructor arguments of a registered name (what ``create_model`` passes before overrides)."""
    if name not in _NAMES:
        raise FFNetError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    family, size = _NAMES[name]
    _, token, channel = _FAMILIES[family]
    return dict(_SIZES[size], token_mixers=token, channel_mixers=channel)


def create_model(name: str, input_size: int = 32, in_channels: int = 4, num_classes: int = 1000,
                 **overrides: Any) -> UShapedDiffusionTransformer:
    """Build a registered model; ``overrides`` replace any constructor argument (e.g. ``token_mixers``)."""
    kwargs = model_kwargs(name)
    kwargs.update(overrides)
    return UShapedDiffusionTransformer(input_size=input_size, in_channels=in_channels,
                                       num_classes=num_classes, **kwargs)
