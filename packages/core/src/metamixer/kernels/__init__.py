"""metamixer.kernels — CPU fast paths for the hot operations of FFNet's convolutional mixers.

``native`` (small C kernels compiled on first use: fused GELU/dropout/regroup, small-matrix product, short
depthwise conv), ``fastconv`` (depthwise convolution as Toeplitz products or the direct C loop), ``fused_ffn``
(the grouped FFN of FFNet-TS with recomputation) and ``dropout`` (a cheaper CPU dropout mask). Every fast path
equals its pure-torch reference (tests) and falls back to it where a kernel is unavailable.
"""
from __future__ import annotations

from metamixer._lazy import lazy_exports

_EXPORTS = {
    "FastDropout": "dropout", "fast_dropout": "dropout", "autocast_dtype": "autocast",
    "depthwise_conv1d_cbl": "fastconv", "swap_depthwise_convs": "fastconv", "grouped_ffn": "fused_ffn",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
