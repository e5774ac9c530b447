"""metamixer — the MetaMixer framework, FFNet blocks and the engine shared by the FFNet apps.

Three layers: :mod:`metamixer.nn` (the framework, its instances and blocks in 1D/2D/sparse 3D,
re-parameterization, MAC counting), :mod:`metamixer.kernels` (CPU fast paths with pure-torch fallbacks) and
:mod:`metamixer.train` (config, CLI, checkpoint, logger, EMA, AMP, DDP, seeding, the training loop). The most
used names are re-exported here lazily, so importing ``metamixer`` stays cheap and optional dependencies
(spconv, tensorboard) load only when used.
"""
from __future__ import annotations

from metamixer._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    # model building blocks (metamixer.nn)
    "LayerNorm2d": "nn.layers", "LayerNormChannelsFirst": "nn.layers", "LayerScale": "nn.layers",
    "DropPath": "nn.layers", "ConvBN": "nn.reparam", "BNConv": "nn.reparam", "RepDWConv": "nn.reparam",
    "ResidualConv1x1": "nn.reparam", "reparameterize": "nn.reparam", "FFNifiedAttention": "nn.blocks",
    "ConvFFN": "nn.blocks", "Residual": "nn.blocks", "FFNetBlock": "nn.blocks", "ffnet_block": "nn.blocks",
    "MultiHeadSelfAttention": "nn.blocks", "HybridAttentionBlock": "nn.blocks", "MetaMixer": "nn.framework",
    "count_params": "nn.flops", "count_macs": "nn.flops",
    # run engine (metamixer.train)
    "FFNetError": "train.errors", "run_cli": "train.errors", "load_config": "train.config",
    "save_config": "train.config", "save_checkpoint": "train.checkpoint", "load_checkpoint": "train.checkpoint",
    "restore_checkpoint": "train.checkpoint", "RunLogger": "train.logger", "ModelEMA": "train.ema",
    "seed_everything": "train.seed",
}
__all__ = sorted(_EXPORTS) + ["__version__"]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
