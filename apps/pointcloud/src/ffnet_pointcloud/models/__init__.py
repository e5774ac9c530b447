"""Model registry: ``create_model(name, in_channels=6, num_classes=20, **overrides)``.

Two families share it: the FFNet3D variants (:data:`MODELS`, overrides of ``FFNet3DConfig``) and the speed peers
(:data:`PEERS`: ``ptv3_style``, a PTv3-style attention U-Net, overrides of its own config), so the trainer, the
tester and ``benchmarks/pc_speed.py`` build either by name.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from metamixer.train.errors import FFNetError

from .ffnet3d import FFNet3D, FFNet3DConfig, FFNet3DSegmentor
from .ptv3_peer import PTv3StyleConfig, PTv3StyleSegmentor

__all__ = [
    "MODELS",
    "PEERS",
    "create_model",
    "list_models",
    "model_config",
    "FFNet3D",
    "FFNet3DConfig",
    "FFNet3DSegmentor",
    "PTv3StyleConfig",
    "PTv3StyleSegmentor",
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


#: speed peers -> field overrides of their own config (not FFNet: attention networks FFNet3D is timed against)
PEERS: dict[str, dict[str, Any]] = {
    # PTv3-style serialized patch attention U-Net, ScanNet semseg defaults (models/ptv3_peer.py); not the
    # authors' checkpoint-compatible PTv3
    "ptv3_style": {},
}


def list_models() -> list[str]:
    return sorted([*MODELS, *PEERS])


def model_config(name: str, **overrides: Any) -> FFNet3DConfig | PTv3StyleConfig:
    if name not in MODELS and name not in PEERS:
        raise FFNetError(f"model.name: unknown model {name!r}; available: {', '.join(list_models())}")
    cls, preset = (FFNet3DConfig, MODELS[name]) if name in MODELS else (PTv3StyleConfig, PEERS[name])
    fields = {f.name for f in dataclasses.fields(cls)}
    bad = sorted(set(overrides) - fields)
    if bad:
        raise FFNetError(f"model.options: unknown model option(s) {bad} for {name!r}; valid: {sorted(fields)}")
    values = {**preset, **{k: v for k, v in overrides.items() if v is not None}}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return cls(**values)


def create_model(
    name: str, in_channels: int = 6, num_classes: int = 20, **overrides: Any
) -> FFNet3DSegmentor | PTv3StyleSegmentor:
    """Build a segmentor by name (``ffnet3d``, ``ffnet3d_paper``, ``ffnet3d_tiny``, or the peer ``ptv3_style``);
    overrides set config fields."""
    cfg = model_config(name, in_channels=in_channels, num_classes=num_classes, **overrides)
    return FFNet3DSegmentor(cfg) if isinstance(cfg, FFNet3DConfig) else PTv3StyleSegmentor(cfg)
