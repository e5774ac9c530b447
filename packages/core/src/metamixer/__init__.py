"""metamixer — the MetaMixer framework, FFNet blocks and the infrastructure shared by the FFNet apps.

Submodules: ``framework`` (MetaMixer and its instances), ``blocks`` (FFNified attention, ConvFFN, FFNet and
hybrid blocks), ``reparam`` (structural re-parameterization), ``layers``, ``sparse`` (spconv wrappers), and the
shared infrastructure ``config``, ``cli``, ``checkpoint``, ``logger``, ``distributed``, ``ema``, ``amp``,
``seed``, ``flops``, ``paths``, ``errors``. The most used names are re-exported here lazily, so importing
``metamixer`` stays cheap and optional dependencies (spconv, tensorboard) load only when used.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    # model building blocks
    "LayerNorm2d": "layers",
    "LayerNormChannelsFirst": "layers",
    "LayerScale": "layers",
    "DropPath": "layers",
    "ConvBN": "reparam",
    "BNConv": "reparam",
    "RepDWConv": "reparam",
    "ResidualConv1x1": "reparam",
    "reparameterize": "reparam",
    "FFNifiedAttention": "blocks",
    "ConvFFN": "blocks",
    "Residual": "blocks",
    "FFNetBlock": "blocks",
    "ffnet_block": "blocks",
    "MultiHeadSelfAttention": "blocks",
    "HybridAttentionBlock": "blocks",
    "MetaMixer": "framework",
    # infrastructure
    "FFNetError": "errors",
    "run_cli": "errors",
    "load_config": "config",
    "save_config": "config",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "restore_checkpoint": "checkpoint",
    "RunLogger": "logger",
    "ModelEMA": "ema",
    "seed_everything": "seed",
    "count_params": "flops",
    "count_macs": "flops",
    "data_root": "paths",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'metamixer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
