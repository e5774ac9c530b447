"""metamixer.nn — the MetaMixer framework and its instances as ``torch.nn`` modules.

``framework`` (MetaMixer and the classic formulas it generalizes), ``blocks`` (FFNified attention, ConvFFN,
FFNet and hybrid blocks in 1D/2D), ``sparse`` (the same blocks on sparse 3D voxels through spconv), ``reparam``
(multi-branch kernels and their fusion), ``layers`` (norms, LayerScale, DropPath) and ``flops`` (MAC counting).
"""
from __future__ import annotations

from metamixer._lazy import lazy_exports

_EXPORTS = {
    "LayerNorm2d": "layers", "LayerNormChannelsFirst": "layers", "LayerScale": "layers", "DropPath": "layers",
    "ConvBN": "reparam", "BNConv": "reparam", "RepDWConv": "reparam", "ResidualConv1x1": "reparam",
    "reparameterize": "reparam", "FFNifiedAttention": "blocks", "ConvFFN": "blocks", "Residual": "blocks",
    "FFNetBlock": "blocks", "ffnet_block": "blocks", "MultiHeadSelfAttention": "blocks",
    "HybridAttentionBlock": "blocks", "MetaMixer": "framework", "count_params": "flops", "count_macs": "flops",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
