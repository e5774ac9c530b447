"""Model registry: ``create_model(name, in_channels=6, num_classes=20, **overrides)``."""

from __future__ import annotations

import dataclasses
from typing import Any

from metamixer.train.errors import FFNetError

from .ffnet3d import FFNet3D, FFNet3DConfig, FFNet3DSegmentor

__all__ = [
    "MODELS",
    "create_model",
    "list_models",
    "model_config",
    "FFNet3D",
    "FFNet3DConfig",
    "FFNet3DSegmentor",
]

#: named architectures -> FFNet3DConfig field overrides
MODELS: dict[str, dict[str, Any]] = {
    # official code (fact sheet §4.1): 5 encoder stages, embedding inside stage 0
    "ffnet3d": {},
    # paper text (App. F.3): encoder [2,2,6,2] x [64,128,256,512] after a full-resolution embedding, decoder
    # [1,1,1,1] x [64,64,128,256]; expressed as a depth-0 stage 0 (embedding only, 32 channels)
    "ffnet3d_paper": {
        "enc_depths": (0, 2, 2, 6, 2),
        "enc_channels": (32, 64, 128, 256, 512),
        "dec_depths": (1, 1, 1, 1),
        "dec_channels": (64, 64, 128, 256),
    },
    # CPU-sized variant for tests, the quick start and laptops (same blocks, fewer/narrower stages)
    "ffnet3d_tiny": {
        "enc_depths": (1, 1, 1, 1),
        "enc_channels": (16, 32, 48, 64),
        "dec_depths": (1, 1, 1),
        "dec_channels": (32, 32, 48),
        "stride": (2, 2, 2),
        "embed_kernel": 3,
        "drop_path": 0.1,
    },
}


def list_models() -> list[str]:
    return sorted(MODELS)


def model_config(name: str, **overrides: Any) -> FFNet3DConfig:
    if name not in MODELS:
        raise FFNetError(f"model.name: unknown model {name!r}; available: {', '.join(list_models())}")
    fields = {f.name for f in dataclasses.fields(FFNet3DConfig)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise FFNetError(f"model.options: unknown model option(s) {bad} for {name!r}; valid: {sorted(fields)}")
    values = {**MODELS[name], **{k: v for k, v in overrides.items() if v is not None}}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return FFNet3DConfig(**values)


def create_model(
    name: str, in_channels: int = 6, num_classes: int = 20, **overrides: Any
) -> FFNet3DSegmentor:
    """Build a segmentor by name (``ffnet3d``, ``ffnet3d_paper``, ``ffnet3d_tiny``); overrides set config fields."""
    return FFNet3DSegmentor(model_config(name, in_channels=in_channels, num_classes=num_classes, **overrides))
