"""Parameter and MAC counting, measured by torch itself.

MACs are counted with ``torch.utils.flop_counter.FlopCounterMode`` on a real forward pass (conv, linear,
matmul/bmm and attention kernels; elementwise ops, norms and activations are not counted), divided by two,
which is the convention of the paper's and timm/fvcore's "FLOPs" tables (1 MAC = 2 FLOPs).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count


# torch's counter knows the CUDA attention kernels but not the CPU one that F.scaled_dot_product_attention
# dispatches to on CPU, which would make attention cost 0 MACs there. Same formula (QK^T and AV matmuls).
def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:  # noqa: ANN001
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_EXTRA_FORMULAS = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _EXTRA_FORMULAS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flops

__all__ = ["count_params", "count_macs"]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of (unique) parameters; shared parameters are counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, *inputs: Any, **kwargs: Any) -> int:
    """Multiply-accumulates of one forward pass ``model(*inputs, **kwargs)`` in eval mode, without grad.

    Eval mode makes dropout/stochastic depth inactive and BN use running stats (as at inference); each
    submodule's training flag is restored afterwards, so this is safe to call in the middle of training.
    """
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as counter:
            model(*inputs, **kwargs)
        return int(counter.get_total_flops()) // 2
    finally:
        for module, training in modes:
            module.training = training
