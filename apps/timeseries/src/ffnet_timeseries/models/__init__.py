"""FFNet-TS models and the model factory."""

from __future__ import annotations

from ffnet_timeseries.models.ffnet_ts import (
    ChannelMixer,
    FFNetTS,
    FFNetTSBackbone,
    FFNetTSBlock,
    FlattenHead,
    TokenMixer,
)
from ffnet_timeseries.models.revin import RevIN
from metamixer.kernels.fastconv import (
    DepthwiseConv1dToeplitz,
    swap_depthwise_convs,
    toeplitz_depthwise_conv1d,
)

__all__ = [
    "ChannelMixer",
    "DepthwiseConv1dToeplitz",
    "FFNetTS",
    "FFNetTSBackbone",
    "FFNetTSBlock",
    "FlattenHead",
    "RevIN",
    "TokenMixer",
    "create_model",
    "swap_depthwise_convs",
    "toeplitz_depthwise_conv1d",
]


def create_model(n_vars: int, seq_len: int = 96, pred_len: int = 96, ffn_ratio: int = 2, **options: object) -> FFNetTS:
    """Build FFNet-TS (official defaults: one stage of one block, D=64, patch 4/2, kernels 51 + 5, RevIN without
    affine). ``options`` are :class:`FFNetTSBackbone` arguments (dims, num_blocks, large_kernel, small_kernel,
    dropout, head_dropout, token_dropouts, mixing, affine, ...)."""
    return FFNetTS(n_vars, seq_len, pred_len, ffn_ratio=ffn_ratio, **options)
